//! Wanda (Sun et al., "A Simple and Effective Pruning Approach for Large Language Models",
//! ICLR 2024; locuslab/wanda `lib/prune.py::prune_wanda`, `lib/layerwrapper.py`): prune by
//! `|W_ij| · ‖X_j‖₂`, per output row, with no weight update.
//!
//! * Statistics (`WrappedGPT.add_batch`): `scaler_row_j = (1/N_seq) Σ_tokens x_j²`, a running
//!   mean over *sequences*; kept in f64 here (the reference uses f32), returned as f32.
//! * Score `|W_ij| · sqrt(scaler_row_j)` in f32, as the reference.
//! * Unstructured: per row, stable ascending sort, prune exactly `floor(in · s)` (every row has
//!   the same count, algorithms.md section 13 item 9).
//! * N:M: per row, the N smallest scores of each run of M columns.
//!
//! The `--use_variant` cumulative-score search of the paper's appendix is not implemented.

use super::mask::{
    apply_mask, nm_mask_row, pruned_per_row, smallest_k_row, PruneOutput, SparsityPattern,
};
use super::{check_finite, check_matrix, tensor_err};
use crate::backend::Tensor;
use crate::error::Result;
use rayon::prelude::*;

/// Running per-input-channel mean squared norm (`scaler_row`) over calibration sequences.
#[derive(Clone, Debug)]
pub struct InputNorms {
    sumsq: Vec<f64>,
    nsamples: usize,
}

impl InputNorms {
    pub fn new(n: usize) -> Self {
        InputNorms {
            sumsq: vec![0.0; n],
            nsamples: 0,
        }
    }

    /// `x` is `[tokens, n]` (one sequence) or `[batch, tokens, n]`.
    pub fn add_batch(&mut self, name: &str, x: &Tensor) -> Result<()> {
        let shape = x.shape();
        let b = match shape.len() {
            2 => 1,
            3 => shape[0],
            _ => {
                return Err(tensor_err(
                    name,
                    format!(
                    "calibration input must be [tokens, in] or [batch, tokens, in], got {shape:?}"
                ),
                ))
            }
        };
        let n = self.sumsq.len();
        if x.cols() != n {
            return Err(tensor_err(
                name,
                format!(
                    "calibration input has {} features, the layer has {n} inputs",
                    x.cols()
                ),
            ));
        }
        check_finite(name, x.data())?;
        for r in 0..x.rows() {
            for (s, &v) in self.sumsq.iter_mut().zip(x.row(r)) {
                *s += v as f64 * v as f64;
            }
        }
        self.nsamples += b;
        Ok(())
    }

    /// Adds per-input sums of squares computed elsewhere (the GPU's `col_stats`) over a
    /// batch of `b` sequences: the same update as `add_batch`.
    pub fn add_sums(&mut self, name: &str, sums: &[f32], b: usize) -> Result<()> {
        if sums.len() != self.sumsq.len() {
            return Err(tensor_err(
                name,
                format!(
                    "{} input sums of squares for a layer with {} inputs",
                    sums.len(),
                    self.sumsq.len()
                ),
            ));
        }
        check_finite(name, sums)?;
        for (s, &v) in self.sumsq.iter_mut().zip(sums) {
            *s += v as f64;
        }
        self.nsamples += b;
        Ok(())
    }

    pub fn nsamples(&self) -> usize {
        self.nsamples
    }

    /// `scaler_row` = Σ x² / N_seq (all zeros before any batch).
    pub fn scaler_row(&self) -> Vec<f32> {
        let n = self.nsamples.max(1) as f64;
        self.sumsq.iter().map(|&s| (s / n) as f32).collect()
    }
}

/// Checks `w`, `pattern` and `scaler_row` for a Wanda prune and returns the input width and
/// the per-input norms `sqrt(scaler_row)` that scale `|w|` (shared by the CPU and GPU paths).
pub(crate) fn wanda_norms(
    name: &str,
    w: &Tensor,
    scaler_row: &[f32],
    pattern: SparsityPattern,
) -> Result<(usize, Vec<f32>)> {
    let (_, cols) = check_matrix(name, w)?;
    pattern.validate(cols)?;
    let sname = format!("{name} (input norms)");
    if scaler_row.len() != cols {
        return Err(tensor_err(
            &sname,
            format!("expected {cols} input norms, got {}", scaler_row.len()),
        ));
    }
    check_finite(&sname, scaler_row)?;
    if let Some(j) = scaler_row.iter().position(|&v| v < 0.0) {
        return Err(tensor_err(
            &sname,
            format!("negative mean square at input {j}"),
        ));
    }
    Ok((cols, scaler_row.iter().map(|v| v.sqrt()).collect()))
}

/// Prunes `w` (tensor `name`, `[out, in]`) by Wanda's score with the input statistics
/// `scaler_row` (`[in]`, from [`InputNorms::scaler_row`]).
pub fn prune_wanda(
    name: &str,
    w: &Tensor,
    scaler_row: &[f32],
    pattern: SparsityPattern,
) -> Result<PruneOutput> {
    let (cols, norms) = wanda_norms(name, w, scaler_row, pattern)?;
    let mut mask = vec![false; w.rows() * cols];
    mask.par_chunks_mut(cols).enumerate().for_each(|(r, mrow)| {
        let scores: Vec<f32> = w
            .row(r)
            .iter()
            .zip(&norms)
            .map(|(x, s)| x.abs() * s)
            .collect();
        match pattern {
            SparsityPattern::Unstructured(s) => {
                smallest_k_row(&scores, pruned_per_row(cols, s), mrow)
            }
            SparsityPattern::NM { n, m } => nm_mask_row(&scores, n, m, mrow),
        }
    });
    Ok(PruneOutput {
        weight: apply_mask(w, &mask),
        mask,
        loss: None,
        damp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interventions::compress::mask::{count_per_row, is_exact_nm};
    use crate::interventions::compress::TestRng;

    #[test]
    fn exact_count_per_row_and_activation_awareness() {
        let mut rng = TestRng::new(8);
        let w = rng.matrix(7, 50);
        let mut norms = InputNorms::new(50);
        let mut x = rng.matrix(30, 50).into_data();
        // Input 0 is huge: its weights must survive even when small.
        for t in 0..30 {
            x[t * 50] = 1e3;
        }
        norms
            .add_batch("x", &Tensor::new(vec![3, 10, 50], x).unwrap())
            .unwrap();
        assert_eq!(norms.nsamples(), 3);
        let sr = norms.scaler_row();
        assert!((sr[0] - 1e7).abs() / 1e7 < 1e-6);
        let out = prune_wanda("w", &w, &sr, SparsityPattern::Unstructured(0.37)).unwrap();
        // floor(50 · 0.37) = 18 in every row.
        assert_eq!(count_per_row(&out.mask, 50), vec![18; 7]);
        for r in 0..7 {
            assert!(!out.mask[r * 50]);
        }
        let nm = prune_wanda("w", &w, &sr, SparsityPattern::NM { n: 2, m: 5 }).unwrap();
        assert!(is_exact_nm(&nm.mask, 50, 2, 5));
    }

    #[test]
    fn validation() {
        let w = TestRng::new(1).matrix(2, 8);
        assert!(prune_wanda("w", &w, &[1.0; 7], SparsityPattern::Unstructured(0.5)).is_err());
        let mut bad = [1.0f32; 8];
        bad[2] = f32::NAN;
        assert!(prune_wanda("w", &w, &bad, SparsityPattern::Unstructured(0.5)).is_err());
        bad[2] = -1.0;
        assert!(prune_wanda("w", &w, &bad, SparsityPattern::Unstructured(0.5)).is_err());
        assert!(prune_wanda("w", &w, &[1.0; 8], SparsityPattern::NM { n: 2, m: 2 }).is_err());
    }
}
