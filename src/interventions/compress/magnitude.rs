//! Magnitude pruning, the baseline of locuslab/wanda `lib/prune.py::prune_magnitude` (and of
//! IST-DASLab/sparsegpt `--gmp`): prune by `|W|` with one threshold for the whole layer,
//! `sort(|W|.flatten())[int(numel · s)]`, inclusive (`|W| <= thresh`), so
//! `floor(numel·s) + 1` weights go (more on ties) and rows differ. N:M: per row, the N
//! smallest `|W|` of each run of M columns. No weight update.
//!
//! The inclusive threshold means `s = 0` still prunes the smallest weight (and every exact
//! zero): the reference's behaviour, kept so that results match it.

use super::check_matrix;
use super::mask::{apply_mask, inclusive_threshold, nm_mask_row, PruneOutput, SparsityPattern};
use crate::backend::Tensor;
use crate::error::Result;

/// Prunes `w` (tensor `name`, `[out, in]`) by magnitude.
pub fn prune_magnitude(name: &str, w: &Tensor, pattern: SparsityPattern) -> Result<PruneOutput> {
    let (_, cols) = check_matrix(name, w)?;
    pattern.validate(cols)?;
    let scores = magnitude_scores(w);
    let mut mask = vec![false; scores.len()];
    match pattern {
        SparsityPattern::Unstructured(s) => {
            let thresh = inclusive_threshold(&scores, s);
            for (m, &v) in mask.iter_mut().zip(&scores) {
                *m = v <= thresh;
            }
        }
        SparsityPattern::NM { n, m } => {
            for (srow, mrow) in scores.chunks(cols).zip(mask.chunks_mut(cols)) {
                nm_mask_row(srow, n, m, mrow);
            }
        }
    }
    Ok(PruneOutput {
        weight: apply_mask(w, &mask),
        mask,
        loss: None,
        damp: None,
    })
}

/// The score of every weight, `|w|` (row-major, as `w`).
pub fn magnitude_scores(w: &Tensor) -> Vec<f32> {
    w.data().iter().map(|x| x.abs()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interventions::compress::mask::is_exact_nm;
    use crate::interventions::compress::TestRng;

    #[test]
    fn layer_threshold_is_inclusive() {
        let w = TestRng::new(6).matrix(10, 20);
        let out = prune_magnitude("w", &w, SparsityPattern::Unstructured(0.3)).unwrap();
        // floor(200 · 0.3) + 1 = 61.
        assert_eq!(out.mask.iter().filter(|&&m| m).count(), 61);
        let max_pruned = w
            .data()
            .iter()
            .zip(&out.mask)
            .filter(|(_, &m)| m)
            .map(|(x, _)| x.abs())
            .fold(0f32, f32::max);
        let min_kept = w
            .data()
            .iter()
            .zip(&out.mask)
            .filter(|(_, &m)| !m)
            .map(|(x, _)| x.abs())
            .fold(f32::INFINITY, f32::min);
        assert!(max_pruned < min_kept);
        let nm = prune_magnitude("w", &w, SparsityPattern::NM { n: 2, m: 4 }).unwrap();
        assert!(is_exact_nm(&nm.mask, 20, 2, 4));
        assert!(prune_magnitude("w", &w, SparsityPattern::Unstructured(1.5)).is_err());
    }
}
