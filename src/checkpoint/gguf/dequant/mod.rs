//! ggml tensor data to f32: a per-block reference kernel for each supported type (as ggml-quants.c
//! `dequantize_row_*`), a sequential driver the tests use as the reference, and a rayon driver
//! for large tensors. Inputs are byte slices borrowed from the memory map; sizes are checked
//! before anything is allocated, so no input can cause a panic or an unbounded allocation.
//! The other direction, for `export gguf`, is [`quantize`] (F32, F16, Q8_0, Q4_0).

mod float;
mod kquants;
mod legacy;
mod quant_q4_0;
mod quant_q8_0;
mod quantize;

pub use quantize::{can_quantize, quantize, quantize_ggml_rule, QuantStats};

use rayon::prelude::*;

use super::GgmlType;

/// Why a byte slice could not be dequantised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error("{n_elements} elements is not a multiple of the {ty} block size {block_size}")]
    NotBlockMultiple {
        ty: GgmlType,
        n_elements: usize,
        block_size: usize,
    },
    #[error("{n_elements} {ty} elements need {expected} bytes, got {actual}")]
    ByteCount {
        ty: GgmlType,
        n_elements: usize,
        /// Printed as "more than usize::MAX" when the size overflows.
        expected: ExpectedBytes,
        actual: usize,
    },
    #[error("dequantising {0} is not implemented")]
    Unsupported(GgmlType),
    #[error("quantising to {0} is not implemented (f32, f16, q8_0 and q4_0 are)")]
    QuantizeUnsupported(GgmlType),
}

/// The byte count a tensor should have, printable even when it overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedBytes(pub Option<usize>);

impl std::fmt::Display for ExpectedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("more than usize::MAX"),
        }
    }
}

/// Below this many elements the rayon driver runs sequentially: splitting costs more than it saves.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Elements per rayon task: large enough to amortise scheduling, small enough to balance.
const ELEMENTS_PER_TASK: usize = 1 << 15;

/// Dequantises `n_elements` values of type `ty` from `bytes`, in parallel for large tensors.
/// The result is in ggml memory order (row-major over the HF shape).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, DequantError> {
    run(ty, bytes, n_elements, true)
}

/// The same as [`dequantize`] on one thread, block after block: the reference the parallel
/// driver is tested against.
pub fn dequantize_sequential(
    ty: GgmlType,
    bytes: &[u8],
    n_elements: usize,
) -> Result<Vec<f32>, DequantError> {
    run(ty, bytes, n_elements, false)
}

/// Checks that `bytes` holds exactly `n_elements` values of `ty`.
pub fn check_size(ty: GgmlType, bytes: usize, n_elements: usize) -> Result<(), DequantError> {
    let block_size = ty.block_size();
    if !n_elements.is_multiple_of(block_size) {
        return Err(DequantError::NotBlockMultiple {
            ty,
            n_elements,
            block_size,
        });
    }
    let expected = (n_elements / block_size).checked_mul(ty.type_size());
    if expected != Some(bytes) {
        return Err(DequantError::ByteCount {
            ty,
            n_elements,
            expected: ExpectedBytes(expected),
            actual: bytes,
        });
    }
    Ok(())
}

fn run(
    ty: GgmlType,
    bytes: &[u8],
    n_elements: usize,
    parallel: bool,
) -> Result<Vec<f32>, DequantError> {
    if !ty.can_dequantize() {
        return Err(DequantError::Unsupported(ty));
    }
    check_size(ty, bytes.len(), n_elements)?;
    // Bounded by the input: `bytes.len()` matches `n_elements`, and no supported type expands
    // to more than ~12 bytes of f32 per stored byte (Q2_K).
    let mut out = vec![0.0f32; n_elements];
    let p = parallel;
    use GgmlType::*;
    match ty {
        F32 => drive(bytes, &mut out, p, float::f32_block),
        F16 => drive(bytes, &mut out, p, float::f16_block),
        BF16 => drive(bytes, &mut out, p, float::bf16_block),
        Q4_0 => drive(bytes, &mut out, p, legacy::q4_0_block),
        Q4_1 => drive(bytes, &mut out, p, legacy::q4_1_block),
        Q5_0 => drive(bytes, &mut out, p, legacy::q5_0_block),
        Q5_1 => drive(bytes, &mut out, p, legacy::q5_1_block),
        Q8_0 => drive(bytes, &mut out, p, legacy::q8_0_block),
        Q2_K => drive(bytes, &mut out, p, kquants::q2_k_block),
        Q3_K => drive(bytes, &mut out, p, kquants::q3_k_block),
        Q4_K => drive(bytes, &mut out, p, kquants::q4_k_block),
        Q5_K => drive(bytes, &mut out, p, kquants::q5_k_block),
        Q6_K => drive(bytes, &mut out, p, kquants::q6_k_block),
        Q8_K => drive(bytes, &mut out, p, kquants::q8_k_block),
        _ => return Err(DequantError::Unsupported(ty)),
    }
    Ok(out)
}

/// Applies a block kernel (`TS` bytes in, `BS` values out) to every block. Lengths were checked
/// by `check_size`; `as_chunks` splits without panicking either way.
fn drive<const BS: usize, const TS: usize, F>(bytes: &[u8], out: &mut [f32], parallel: bool, f: F)
where
    F: Fn(&[u8; TS], &mut [f32; BS]) + Sync,
{
    if parallel && out.len() >= PARALLEL_MIN_ELEMENTS {
        let blocks_per_task = (ELEMENTS_PER_TASK / BS).max(1);
        out.par_chunks_mut(blocks_per_task * BS)
            .zip(bytes.par_chunks(blocks_per_task * TS))
            .for_each(|(o, b)| blocks(b, o, &f));
    } else {
        blocks(bytes, out, &f);
    }
}

fn blocks<const BS: usize, const TS: usize, F>(bytes: &[u8], out: &mut [f32], f: &F)
where
    F: Fn(&[u8; TS], &mut [f32; BS]),
{
    let (inp, _) = bytes.as_chunks::<TS>();
    let (outp, _) = out.as_chunks_mut::<BS>();
    for (b, y) in inp.iter().zip(outp) {
        f(b, y);
    }
}

#[cfg(test)]
mod tests;
