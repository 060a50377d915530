//! Round-to-nearest quantisation per group: every weight goes to its group's nearest grid
//! point, no error feedback. With `Grid::Awq` this is llm-awq's `pseudo_quantize_tensor`; with
//! the GPTQ grids it is GPTQ's `Quantizer` applied without `fasterquant` (the RTN baseline of
//! IST-DASLab/gptq `llama.py --nearest`).

use super::check_matrix;
use super::quant::{QuantSpec, QuantizedWeight};
use crate::backend::Tensor;
use crate::error::Result;
use rayon::prelude::*;

/// Quantises `w` (`[out, in]`, tensor `name`) group by group.
pub fn rtn(name: &str, w: &Tensor, spec: QuantSpec) -> Result<QuantizedWeight> {
    spec.validate()?;
    let (rows, cols) = check_matrix(name, w)?;
    let gw = spec.group_width(cols);
    let ng = spec.n_groups(cols);
    let mut out = vec![0f32; rows * cols];
    let mut q = vec![0u8; rows * cols];
    let mut scales = vec![0f32; rows * ng];
    let mut zeros = vec![0f32; rows * ng];
    out.par_chunks_mut(cols)
        .zip(q.par_chunks_mut(cols))
        .zip(scales.par_chunks_mut(ng).zip(zeros.par_chunks_mut(ng)))
        .enumerate()
        .for_each(|(r, ((orow, qrow), (srow, zrow)))| {
            let wrow = w.row(r);
            for g in 0..ng {
                let (c0, c1) = (g * gw, ((g + 1) * gw).min(cols));
                let p = spec.fit(&wrow[c0..c1]);
                srow[g] = p.scale;
                zrow[g] = p.zero;
                for c in c0..c1 {
                    qrow[c] = p.index(wrow[c]);
                    orow[c] = p.quantize(wrow[c]);
                }
            }
        });
    Ok(QuantizedWeight {
        weight: Tensor::new(vec![rows, cols], out).expect("shape matches data"),
        q,
        scales,
        zeros,
        n_groups: ng,
        g_idx: (0..cols).map(|c| (c / gw) as u32).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interventions::compress::quant::Grid;
    use crate::interventions::compress::TestRng;

    #[test]
    fn last_group_is_shorter_and_values_per_group_bounded() {
        let w = TestRng::new(7).matrix(5, 80);
        for grid in [Grid::GptqAsym, Grid::GptqSym, Grid::Awq] {
            let spec = QuantSpec::new(3, 32, grid).unwrap();
            let qw = rtn("w", &w, spec).unwrap();
            assert_eq!(qw.n_groups, 3);
            assert_eq!(qw.g_idx[79], 2);
            for r in 0..5 {
                for g in 0..3 {
                    let c1 = ((g + 1) * 32).min(80);
                    let mut v: Vec<u8> = (g * 32..c1).map(|c| qw.q[r * 80 + c]).collect();
                    v.sort();
                    v.dedup();
                    assert!(v.len() <= 8);
                }
                for c in 0..80 {
                    let p = qw.params(r, c, spec.maxq());
                    assert_eq!(qw.weight.data()[r * 80 + c], p.dequant(qw.q[r * 80 + c]));
                }
            }
            // Error bounded by half a step inside the (unclipped) range.
            let err = w
                .data()
                .iter()
                .zip(qw.weight.data())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1.0, "{grid:?}: {err}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let mut w = TestRng::new(1).matrix(2, 4);
        let spec = QuantSpec::new(4, -1, Grid::GptqSym).unwrap();
        w.data_mut()[3] = f32::NAN;
        let e = rtn("layer.w", &w, spec).unwrap_err().to_string();
        assert!(e.contains("layer.w") && e.contains("non-finite"), "{e}");
        let v = Tensor::new(vec![8], vec![0.0; 8]).unwrap();
        assert!(rtn("v", &v, spec).is_err());
        let bad = QuantSpec {
            bits: 9,
            group: -1,
            grid: Grid::Awq,
        };
        assert!(rtn("w", &TestRng::new(1).matrix(2, 4), bad).is_err());
    }
}
