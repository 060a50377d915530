//! Cross-entropy of one row of logits against chosen target tokens, with its gradient to the
//! logits; the gradient-ascent loss is the same term with a negative weight.
//!
//! Legend: V = vocabulary.

use crate::backend::cpu::exp::exp;
use crate::backend::cpu::reduce;
use crate::backend::cpu::simd::wide_fn;

wide_fn! {
    /// `log softmax(logits)` into `logp` (`[V]`), the normaliser closed in f64.
    pub fn log_softmax(logits: &[f32], logp: &mut [f32]) {
        let m = reduce::max(logits);
        let z = reduce::sum_map(logits, |l| exp(l - m));
        let lz = m + z.ln() as f32;
        for (o, &l) in logp.iter_mut().zip(logits) {
            *o = l - lz;
        }
    }
}

/// `sum_t w_t * -log p(token_t)` over `targets` (`(token, weight)`, tokens < V), adding its
/// gradient `sum_t w_t * (p - onehot(token_t))` to `dlogits`. `logp` is the row's log-softmax.
pub fn cross_entropy_row(logp: &[f32], targets: &[(u32, f32)], dlogits: &mut [f32]) -> f64 {
    let wsum: f32 = targets.iter().map(|&(_, w)| w).sum();
    add_scaled_exp(dlogits, logp, wsum);
    let mut loss = 0.0f64;
    for &(t, w) in targets {
        loss -= f64::from(w) * f64::from(logp[t as usize]);
        dlogits[t as usize] -= w;
    }
    loss
}

wide_fn! {
    /// `g += w * exp(lp)`: the softmax part of the gradient, from the log-probabilities.
    fn add_scaled_exp(dlogits: &mut [f32], logp: &[f32], w: f32) {
        for (g, &lp) in dlogits.iter_mut().zip(logp) {
            *g += w * exp(lp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    fn reference(z: &[f64], targets: &[(u32, f32)]) -> f64 {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lz = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        targets
            .iter()
            .map(|&(t, w)| -f64::from(w) * (z[t as usize] - lz))
            .sum()
    }

    #[test]
    fn gradient_matches_finite_differences_for_descent_and_ascent() {
        let mut rng = Rng::new(17);
        let logits = rng.vec(13, 4.0);
        // Two targets on one row (a bag of tokens), one repeated; then the ascent sign.
        for targets in [vec![(3u32, 0.5f32), (7, 0.25), (3, 0.25)], vec![(5, -1.0)]] {
            let mut logp = vec![0.0; 13];
            log_softmax(&logits, &mut logp);
            let mut g = vec![0.0; 13];
            let loss = cross_entropy_row(&logp, &targets, &mut g);
            let z = to64(&logits);
            assert!((loss - reference(&z, &targets)).abs() < 1e-5);
            check_fd("cross-entropy dlogits", &g, &z, |v| reference(v, &targets));
        }
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let logits = [1e30f32, -1e30, 0.0];
        let mut logp = [0.0f32; 3];
        log_softmax(&logits, &mut logp);
        let mut g = [0.0f32; 3];
        let loss = cross_entropy_row(&logp, &[(0, 1.0)], &mut g);
        assert_eq!(loss, 0.0);
        assert!(g.iter().all(|v| v.is_finite()));
    }
}
