//! KL divergence of the model's next-token distribution from a frozen one at a row, as
//! ROME/MEMIT's essence term computes it: PyTorch `kl_div(init_logp, new_logp,
//! log_target=True)` = `sum_v p_new (log p_new - log p_init)`.
//!
//! Legend: V = vocabulary.

/// `w * KL(p_new || p_init)` for one row, adding its gradient to `dlogits`:
/// `w * p_j * (r_j - KL)` with `r_j = log p_new_j - log p_init_j`. `logp` is the row's
/// log-softmax, `init_logp` the frozen log-probabilities.
pub fn kl_row(logp: &[f32], init_logp: &[f32], w: f32, dlogits: &mut [f32]) -> f64 {
    let kl: f64 = logp
        .iter()
        .zip(init_logp)
        .map(|(&a, &b)| f64::from(a).exp() * f64::from(a - b))
        .sum();
    for ((g, &a), &b) in dlogits.iter_mut().zip(logp).zip(init_logp) {
        *g += w * a.exp() * ((a - b) - kl as f32);
    }
    f64::from(w) * kl
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};
    use crate::train::loss::cross_entropy::log_softmax;

    #[test]
    fn gradient_matches_finite_differences_and_vanishes_at_the_reference() {
        let mut rng = Rng::new(18);
        let (logits, other) = (rng.vec(11, 3.0), rng.vec(11, 3.0));
        let mut init = vec![0.0; 11];
        log_softmax(&other, &mut init);
        let mut logp = vec![0.0; 11];
        log_softmax(&logits, &mut logp);
        let mut g = vec![0.0; 11];
        kl_row(&logp, &init, 0.5, &mut g);
        let init64 = to64(&init);
        check_fd("kl dlogits", &g, &to64(&logits), |z| {
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lz = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            0.5 * z
                .iter()
                .zip(&init64)
                .map(|(v, b)| (v - lz).exp() * (v - lz - b))
                .sum::<f64>()
        });
        // At the frozen distribution itself the loss and its gradient are zero.
        let mut g = vec![0.0; 11];
        let loss = kl_row(&init, &init, 1.0, &mut g);
        assert!(loss.abs() < 1e-7 && g.iter().all(|v| v.abs() < 1e-7));
    }
}
