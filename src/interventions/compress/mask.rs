//! Mask selection shared by the pruners (SparseGPT, Wanda, magnitude): the sparsity pattern,
//! N:M groups, per-row and per-layer smallest-score selection, and the output type.
//!
//! N:M follows the reference code (IST-DASLab/sparsegpt `prunen/prunem`, locuslab/wanda
//! `prune_n/prune_m`): in each row, for every run of M consecutive input columns, the **N
//! smallest** scores are pruned (`topk(N, largest=False)`), so 2:4 prunes 2 of every 4 and at
//! least N weights per group end up zero. Ties go to the lower column index (torch leaves
//! `topk` tie order unspecified).

use crate::backend::Tensor;
use crate::error::{Error, Result};

/// How many weights to prune and where.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SparsityPattern {
    /// Fraction of weights to prune, in `[0, 1)`; the comparison group depends on the method.
    Unstructured(f64),
    /// Prune `n` of every `m` consecutive input columns in each row (`0 < n < m`).
    NM { n: usize, m: usize },
}

impl SparsityPattern {
    /// Checks the settings against a row of `cols` inputs. N:M needs `cols % m == 0` (the
    /// reference code would index past the row otherwise).
    pub fn validate(&self, cols: usize) -> Result<()> {
        match *self {
            SparsityPattern::Unstructured(s) => {
                if !(0.0..1.0).contains(&s) {
                    return Err(Error::usage(
                        "--sparsity",
                        format!("sparsity must be in [0, 1), got {s}"),
                    ));
                }
            }
            SparsityPattern::NM { n, m } => {
                if n == 0 || n >= m {
                    return Err(Error::usage(
                        "--nm",
                        format!("N:M needs 0 < N < M, got {n}:{m}"),
                    ));
                }
                if !cols.is_multiple_of(m) {
                    return Err(Error::usage(
                        "--nm",
                        format!(
                            "N:M with M = {m} needs the input width ({cols}) to be a multiple of M"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A pruned weight and its mask.
#[derive(Clone, Debug)]
pub struct PruneOutput {
    /// The pruned (and, for SparseGPT, OBS-updated) weight `[out, in]`.
    pub weight: Tensor,
    /// `true` where a weight was pruned, `[out, in]` row-major.
    pub mask: Vec<bool>,
    /// SparseGPT's reconstruction loss `Σ (w - q)² / d² / 2`; `None` for score-only pruners.
    pub loss: Option<f64>,
    /// SparseGPT's damping record; `None` for score-only pruners.
    pub damp: Option<super::hessian::DampReport>,
}

/// Marks, in each run of `m` entries of `scores` (one row), the `n` smallest (ties: lower index).
pub fn nm_mask_row(scores: &[f32], n: usize, m: usize, mask: &mut [bool]) {
    debug_assert_eq!(scores.len(), mask.len());
    let mut idx: Vec<usize> = Vec::with_capacity(m);
    for (g, chunk) in scores.chunks(m).enumerate() {
        idx.clear();
        idx.extend(0..chunk.len());
        // Stable sort: equal scores keep index order.
        idx.sort_by(|&a, &b| chunk[a].total_cmp(&chunk[b]));
        for &k in idx.iter().take(n) {
            mask[g * m + k] = true;
        }
    }
}

/// How many of a row's `cols` weights unstructured per-row pruning at `sparsity` removes
/// (Wanda's `int(W.shape[1] * sparsity_ratio)`).
pub fn pruned_per_row(cols: usize, sparsity: f64) -> usize {
    (cols as f64 * sparsity) as usize
}

/// Marks the `k` smallest entries of one row (stable sort, as Wanda's `torch.sort(stable=True)`).
pub fn smallest_k_row(scores: &[f32], k: usize, mask: &mut [bool]) {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    for &i in idx.iter().take(k) {
        mask[i] = true;
    }
}

/// The value at position `k` of `scores` sorted ascending (`sort(scores)[k]`), `k < len`.
pub fn kth_smallest(scores: &[f32], k: usize) -> f32 {
    let mut s = scores.to_vec();
    let (_, v, _) = s.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *v
}

/// Inclusive threshold index used by SparseGPT and the magnitude baseline:
/// `sort(scores)[int(numel · sparsity)]`, then everything `<=` it is pruned, i.e.
/// `floor(numel·s) + 1` entries when there are no ties (algorithms.md section 13 item 9).
pub fn inclusive_threshold(scores: &[f32], sparsity: f64) -> f32 {
    let k = ((scores.len() as f64 * sparsity) as usize).min(scores.len() - 1);
    kth_smallest(scores, k)
}

/// Number of `true` entries in each row of a `[rows, cols]` mask.
pub fn count_per_row(mask: &[bool], cols: usize) -> Vec<usize> {
    mask.chunks(cols)
        .map(|r| r.iter().filter(|&&b| b).count())
        .collect()
}

/// Whether every run of `m` columns in each row has exactly `n` entries marked.
pub fn is_exact_nm(mask: &[bool], cols: usize, n: usize, m: usize) -> bool {
    cols.is_multiple_of(m)
        && mask
            .chunks(cols)
            .all(|row| row.chunks(m).all(|g| g.iter().filter(|&&b| b).count() == n))
}

/// `w` with the masked entries set to zero.
pub(crate) fn apply_mask(w: &Tensor, mask: &[bool]) -> Tensor {
    let data = w
        .data()
        .iter()
        .zip(mask)
        .map(|(&v, &m)| if m { 0.0 } else { v })
        .collect();
    Tensor::new(w.shape().to_vec(), data).expect("same shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nm_marks_n_smallest_with_stable_ties() {
        let s = [3.0, 1.0, 1.0, 2.0, 0.0, 5.0, 4.0, 0.5];
        let mut m = [false; 8];
        nm_mask_row(&s, 2, 4, &mut m);
        assert_eq!(m, [false, true, true, false, true, false, false, true]);
        assert!(is_exact_nm(&m, 8, 2, 4));
        assert!(!is_exact_nm(&m, 8, 1, 4));
    }

    #[test]
    fn thresholds_and_rows() {
        let s = [0.4, 0.1, 0.3, 0.2, 0.5];
        assert_eq!(kth_smallest(&s, 0), 0.1);
        assert_eq!(kth_smallest(&s, 3), 0.4);
        // int(5 · 0.5) = 2 → threshold 0.3 → 3 entries (<=) pruned.
        assert_eq!(inclusive_threshold(&s, 0.5), 0.3);
        let mut m = [false; 5];
        smallest_k_row(&s, 2, &mut m);
        assert_eq!(m, [false, true, false, true, false]);
        assert_eq!(count_per_row(&[true, false, true, true], 2), vec![1, 2]);
    }

    #[test]
    fn pattern_validation() {
        assert!(SparsityPattern::Unstructured(1.0).validate(8).is_err());
        assert!(SparsityPattern::Unstructured(-0.1).validate(8).is_err());
        assert!(SparsityPattern::Unstructured(f64::NAN).validate(8).is_err());
        assert!(SparsityPattern::NM { n: 4, m: 4 }.validate(8).is_err());
        assert!(SparsityPattern::NM { n: 0, m: 4 }.validate(8).is_err());
        assert!(SparsityPattern::NM { n: 2, m: 4 }.validate(10).is_err());
        assert!(SparsityPattern::NM { n: 2, m: 4 }.validate(8).is_ok());
    }
}
