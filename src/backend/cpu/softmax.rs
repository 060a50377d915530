//! Softmax and log-softmax over a row, both shifted by the row maximum so no `exp` overflows.

use super::exp::exp;
use super::reduce;
use super::simd::wide_fn;

wide_fn! {
    /// In-place softmax of `x`. The sum is closed in f64: attention rows can be thousands long.
    pub fn softmax_inplace(x: &mut [f32]) {
        let max = reduce::max(x);
        let sum = reduce::map_sum(x, |v| exp(v - max));
        let inv = (1.0 / sum) as f32;
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

wide_fn! {
    /// `log(sum(exp(x)))`, stably: `max + log(sum(exp(x - max)))`, the sum closed in f64.
    pub fn logsumexp(x: &[f32]) -> f32 {
        let max = reduce::max(x);
        if !max.is_finite() {
            return max;
        }
        let sum = reduce::sum_map(x, |v| exp(v - max));
        (f64::from(max) + sum.ln()) as f32
    }
}

/// The negative log-likelihood of `target` under `softmax(logits)`: `logsumexp - logit`.
pub fn nll(logits: &[f32], target: usize) -> f32 {
    logsumexp(logits) - logits[target]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;

    #[test]
    fn matches_naive_and_survives_large_logits() {
        let mut rng = Rng::new(4);
        let x = rng.vec(211, 5.0);
        let lse_ref = x.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
        let mut p = x.clone();
        softmax_inplace(&mut p);
        let p_ref: Vec<f32> = x
            .iter()
            .map(|&v| (f64::from(v).exp() / lse_ref.exp()) as f32)
            .collect();
        Tolerance::F32_KERNEL.check("softmax", &p, &p_ref).unwrap();
        let t = 17;
        let nll_ref = (lse_ref - f64::from(x[t])) as f32;
        Tolerance::F32_KERNEL
            .check("nll", &[nll(&x, t)], &[nll_ref])
            .unwrap();
        // Shifted by 1e4, a naive exp overflows to inf; the stable form is unchanged.
        let big: Vec<f32> = x.iter().map(|v| v + 1e4).collect();
        // 1e4 + O(1) in f32 keeps ~1e-3 absolute precision, hence the looser bound.
        let tol = Tolerance {
            abs: 2e-3,
            rel: 0.0,
        };
        tol.check("nll shifted", &[nll(&big, t)], &[nll_ref])
            .unwrap();
        let mut pb = big.clone();
        softmax_inplace(&mut pb);
        assert!(pb.iter().all(|v| v.is_finite()));
    }
}
