//! f32 -> ggml bytes for the types `export gguf` writes (F32, F16, Q8_0, Q4_0), with per-tensor
//! statistics of what the encoding lost: every encoded block is decoded again by the same
//! dequantiser the reader uses and compared with its input bit for bit.

use rayon::prelude::*;

use super::{float, legacy, quant_q4_0, quant_q8_0, DequantError, ELEMENTS_PER_TASK};
use super::{GgmlType, PARALLEL_MIN_ELEMENTS};

/// What encoding one tensor lost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QuantStats {
    /// Blocks written (elements for F32/F16).
    pub blocks: usize,
    /// Blocks that decode to their input bit for bit.
    pub lossless_blocks: usize,
    /// Q4_0 blocks found on a symmetric 4-bit grid and stored with their own indices
    /// (the rest use ggml's rule).
    pub grid_blocks: usize,
    /// Largest |decoded - input| over the tensor.
    pub max_abs_err: f32,
}

impl QuantStats {
    fn merge(mut self, o: QuantStats) -> QuantStats {
        self.blocks += o.blocks;
        self.lossless_blocks += o.lossless_blocks;
        self.grid_blocks += o.grid_blocks;
        self.max_abs_err = self.max_abs_err.max(o.max_abs_err);
        self
    }

    pub fn lossless(&self) -> bool {
        self.lossless_blocks == self.blocks
    }
}

/// Whether [`quantize`] can write `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_0
    )
}

/// Encodes `values` (finite, row-major, rows contiguous) as `ty`. Blocks run along the flat
/// array, so for a matrix the row length must be a multiple of the block size for blocks not
/// to straddle rows; the caller checks that (here only the total is checked).
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<(Vec<u8>, QuantStats), DequantError> {
    if !can_quantize(ty) {
        return Err(DequantError::QuantizeUnsupported(ty));
    }
    let block_size = ty.block_size();
    if !values.len().is_multiple_of(block_size) {
        return Err(DequantError::NotBlockMultiple {
            ty,
            n_elements: values.len(),
            block_size,
        });
    }
    Ok(match ty {
        GgmlType::F32 => drive(values, |x| (float::f32_encode(x), false), float::f32_block),
        GgmlType::F16 => drive(values, |x| (float::f16_encode(x), false), float::f16_block),
        GgmlType::Q8_0 => drive(
            values,
            |x| (quant_q8_0::q8_0_quantize_block(x), false),
            legacy::q8_0_block,
        ),
        _ => drive(
            values,
            |x| match quant_q4_0::q4_0_encode_on_grid(x) {
                Some(b) => (b, true),
                None => (quant_q4_0::q4_0_quantize_block(x), false),
            },
            legacy::q4_0_block,
        ),
    })
}

/// Encodes ggml's reference way only (no grid detection): what llama.cpp's quantiser writes
/// for the same f32 input. Used by tests to compare with llama.cpp byte for byte.
pub fn quantize_ggml_rule(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, DequantError> {
    if ty != GgmlType::Q4_0 {
        return quantize(ty, values).map(|(b, _)| b);
    }
    if !values.len().is_multiple_of(32) {
        return Err(DequantError::NotBlockMultiple {
            ty,
            n_elements: values.len(),
            block_size: 32,
        });
    }
    let (blocks, _) = values.as_chunks::<32>();
    Ok(blocks
        .iter()
        .flat_map(quant_q4_0::q4_0_quantize_block)
        .collect())
}

fn drive<const BS: usize, const TS: usize, E, D>(
    values: &[f32],
    encode: E,
    decode: D,
) -> (Vec<u8>, QuantStats)
where
    E: Fn(&[f32; BS]) -> ([u8; TS], bool) + Sync,
    D: Fn(&[u8; TS], &mut [f32; BS]) + Sync,
{
    let run = |chunk: &[f32]| {
        let (blocks, _) = chunk.as_chunks::<BS>();
        let mut out = Vec::with_capacity(blocks.len() * TS);
        let mut st = QuantStats::default();
        let mut y = [0.0f32; BS];
        for x in blocks {
            let (b, grid) = encode(x);
            decode(&b, &mut y);
            st.blocks += 1;
            st.grid_blocks += usize::from(grid);
            let mut same = true;
            for (a, c) in x.iter().zip(&y) {
                same &= a.to_bits() == c.to_bits();
                st.max_abs_err = st.max_abs_err.max((a - c).abs());
            }
            st.lossless_blocks += usize::from(same);
            out.extend_from_slice(&b);
        }
        (out, st)
    };
    if values.len() < PARALLEL_MIN_ELEMENTS {
        return run(values);
    }
    let per_task = (ELEMENTS_PER_TASK / BS).max(1) * BS;
    let parts: Vec<(Vec<u8>, QuantStats)> = values.par_chunks(per_task).map(run).collect();
    let mut bytes = Vec::with_capacity(values.len() / BS * TS);
    let mut stats = QuantStats::default();
    for (b, s) in parts {
        bytes.extend_from_slice(&b);
        stats = stats.merge(s);
    }
    (bytes, stats)
}

#[cfg(test)]
mod tests {
    use super::super::dequantize;
    use super::*;

    fn data(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.7311).sin() * 1.7 + (i as f32 * 0.013).cos()) * 0.1)
            .collect()
    }

    /// Named tolerances against the largest |x| of the data (0.27): Q8_0, half a step
    /// (max/127) plus |q| <= 127 times the fp16 rounding of d (2^-11 relative); Q4_0, a full
    /// step max/8 (ggml clamps index 16 to 15, moving `-max` of a block whose extreme is `+max`
    /// by one step... and `+max` of one whose extreme is `-max`) plus the same fp16 term.
    const Q8_0_TOL: f32 = 0.27 / 127.0 * 0.5 + 0.27 / 2048.0;
    const Q4_0_TOL: f32 = 0.27 / 8.0 + 0.27 / 2048.0;

    #[test]
    fn every_type_round_trips_through_the_reader_within_its_tolerance() {
        // Large enough to take the parallel path.
        let x = data(PARALLEL_MIN_ELEMENTS * 2 + 96);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(amax <= 0.27);
        for (ty, tol) in [
            (GgmlType::F32, 0.0),
            (GgmlType::F16, amax * 2f32.powi(-11)),
            (GgmlType::Q8_0, Q8_0_TOL),
            (GgmlType::Q4_0, Q4_0_TOL),
        ] {
            let (bytes, st) = quantize(ty, &x).unwrap();
            let y = dequantize(ty, &bytes, x.len()).unwrap();
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert_eq!(err, st.max_abs_err, "{ty}");
            assert!(err <= tol, "{ty}: {err} > {tol}");
            assert_eq!(st.blocks, x.len() / ty.block_size());
            if ty == GgmlType::F32 {
                assert!(st.lossless());
            } else {
                assert!(!st.lossless(), "{ty}: random data cannot all be exact");
            }
            // The parallel driver agrees with one sequential pass.
            let seq: Vec<u8> = x
                .chunks(ty.block_size() * 64)
                .flat_map(|c| quantize(ty, c).unwrap().0)
                .collect();
            assert_eq!(seq, bytes, "{ty}");
        }
    }

    #[test]
    fn ggml_rule_and_grid_path_agree_off_grid() {
        let x = data(32 * 40);
        let (grid, st) = quantize(GgmlType::Q4_0, &x).unwrap();
        assert_eq!(st.grid_blocks, 0);
        assert_eq!(grid, quantize_ggml_rule(GgmlType::Q4_0, &x).unwrap());
    }

    #[test]
    fn refuses_other_types_and_ragged_lengths() {
        assert!(matches!(
            quantize(GgmlType::Q4_K, &[0.0; 256]),
            Err(DequantError::QuantizeUnsupported(GgmlType::Q4_K))
        ));
        assert!(matches!(
            quantize(GgmlType::Q8_0, &[0.0; 33]),
            Err(DequantError::NotBlockMultiple { .. })
        ));
    }
}
