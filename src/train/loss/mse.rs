//! Mean squared error between the hidden states at a layer and a target (RMU's forget term
//! against a broadcast control vector, and its retain term against a frozen model's hidden
//! states), as PyTorch `mse_loss` with mean reduction over every element.
//!
//! Legend: N = rows, C = hidden size.

/// What the hidden states are pulled towards.
#[derive(Clone, Debug, PartialEq)]
pub enum MseTarget {
    /// One `[C]` vector for every row (RMU's `c * u`).
    Broadcast(Vec<f32>),
    /// `[N, C]`, row for row (a frozen model's hidden states).
    Rows(Vec<f32>),
}

impl MseTarget {
    /// Whether the target fits hidden states of `n` rows of width `c`.
    pub fn fits(&self, n: usize, c: usize) -> bool {
        match self {
            MseTarget::Broadcast(t) => t.len() == c,
            MseTarget::Rows(t) => t.len() == n * c,
        }
    }
}

/// `w * mean((h - target)^2)` over the `[N, C]` hidden states, adding its gradient
/// `w * 2 (h - target) / (N C)` to `dh`. The caller checked `target.fits(N, C)`.
pub fn mse(h: &[f32], c: usize, target: &MseTarget, w: f32, dh: &mut [f32]) -> f64 {
    mse_rows(h, c, target, w, dh, None)
}

/// As [`mse`] over the rows where `keep` is true only (all rows when `None`): the mean is
/// over the kept elements, and the other rows get no gradient. A batch that keeps no row
/// contributes nothing.
pub fn mse_rows(
    h: &[f32],
    c: usize,
    target: &MseTarget,
    w: f32,
    dh: &mut [f32],
    keep: Option<&[bool]>,
) -> f64 {
    let kept = keep.map_or(h.len() / c.max(1), |k| k.iter().filter(|&&x| x).count());
    let numel = (kept * c).max(1);
    let k = 2.0 * w / numel as f32;
    let mut sum = 0.0f64;
    for (r, (hr, dr)) in h.chunks_exact(c).zip(dh.chunks_exact_mut(c)).enumerate() {
        if keep.is_some_and(|k| !k[r]) {
            continue;
        }
        let tr = match target {
            MseTarget::Broadcast(t) => &t[..],
            MseTarget::Rows(t) => &t[r * c..(r + 1) * c],
        };
        for ((&a, &b), g) in hr.iter().zip(tr).zip(dr) {
            let e = a - b;
            sum += f64::from(e) * f64::from(e);
            *g += k * e;
        }
    }
    f64::from(w) * sum / numel as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    #[test]
    fn gradient_matches_finite_differences_for_both_targets() {
        let mut rng = Rng::new(19);
        let (n, c) = (3, 5);
        let h = rng.vec(n * c, 2.0);
        for target in [
            MseTarget::Broadcast(rng.vec(c, 2.0)),
            MseTarget::Rows(rng.vec(n * c, 2.0)),
        ] {
            assert!(target.fits(n, c) && !target.fits(n + 1, c + 1));
            let mut g = vec![0.0; n * c];
            mse(&h, c, &target, 0.7, &mut g);
            check_fd("mse dh", &g, &to64(&h), |x| {
                let t: Vec<f64> = match &target {
                    MseTarget::Broadcast(t) => (0..n).flat_map(|_| to64(t)).collect(),
                    MseTarget::Rows(t) => to64(t),
                };
                0.7 * x.iter().zip(&t).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (n * c) as f64
            });
        }
    }

    #[test]
    fn masked_rows_are_left_out_of_the_mean_and_the_gradient() {
        let mut rng = Rng::new(23);
        let (n, c) = (4, 3);
        let h = rng.vec(n * c, 2.0);
        let t = rng.vec(n * c, 2.0);
        let keep = [false, true, true, false];
        let mut g = vec![0.0; n * c];
        let loss = mse_rows(&h, c, &MseTarget::Rows(t.clone()), 0.5, &mut g, Some(&keep));
        // The same as the plain loss over rows 1..3 alone.
        let middle = MseTarget::Rows(t[c..3 * c].to_vec());
        let mut g_sub = vec![0.0; 2 * c];
        let sub = mse(&h[c..3 * c], c, &middle, 0.5, &mut g_sub);
        assert!((loss - sub).abs() <= 1e-12 * sub.abs(), "{loss} vs {sub}");
        assert_eq!(&g[c..3 * c], &g_sub[..]);
        assert!(g[..c].iter().chain(&g[3 * c..]).all(|&x| x == 0.0));
        assert!(loss > 0.0);
    }
}
