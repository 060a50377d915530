//! SwiGLU backward, mirroring `backend::cpu::swiglu` (`act = silu(gate) * up` over the fused
//! `[gate | up]` rows).
//!
//! Legend: M = rows, I = intermediate size.

use rayon::prelude::*;

use crate::backend::cpu::exp::exp;
use crate::backend::cpu::simd::wide_fn;

/// `sigmoid(x)` as `1 / (1 + e^-x)`, branch-free so the row loop vectorises; an `e^-x`
/// that overflows gives the correct 0.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

wide_fn! {
    fn backward_row(da: &[f32], g: &[f32], u: &[f32], dg: &mut [f32], du: &mut [f32]) {
        // Zipped iterators rather than indices, so no bounds check stops the vectoriser.
        let rows = dg.iter_mut().zip(du.iter_mut()).zip(da.iter().zip(g).zip(u));
        for ((dgp, dup), ((&dap, &gp), &up)) in rows {
            let s = sigmoid(gp);
            *dup = dap * gp * s;
            *dgp = dap * up * s * (1.0 + gp * (1.0 - s));
        }
    }
}

/// Writes `d_gate_up[M, 2I]` from `d_act[M, I]`: `d_up = d_act * silu(g)`,
/// `d_gate = d_act * up * s * (1 + g * (1 - s))` with `s = sigmoid(g)` (silu's derivative).
pub fn swiglu_backward(d_act: &[f32], gate_up: &[f32], d_gate_up: &mut [f32], i: usize) {
    assert!(
        i > 0
            && gate_up.len() == 2 * d_act.len()
            && d_gate_up.len() == gate_up.len()
            && d_act.len().is_multiple_of(i),
        "swiglu_backward: shapes"
    );
    d_gate_up
        .par_chunks_mut(2 * i)
        .zip(gate_up.par_chunks(2 * i).zip(d_act.par_chunks(i)))
        .for_each(|(dgu, (gu, da))| {
            let (g, u) = gu.split_at(i);
            let (dg, du) = dgu.split_at_mut(i);
            backward_row(da, g, u, dg, du);
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    fn reference(gu: &[f64], i: usize) -> Vec<f64> {
        gu.chunks(2 * i)
            .flat_map(|row| (0..i).map(move |p| row[p] / (1.0 + (-row[p]).exp()) * row[i + p]))
            .collect()
    }

    #[test]
    fn gradients_match_finite_differences_and_stay_finite() {
        let mut rng = Rng::new(13);
        let (m, i) = (4, 9);
        let (gu, da) = (rng.vec(m * 2 * i, 4.0), rng.vec(m * i, 1.0));
        let mut dgu = vec![0.0; gu.len()];
        swiglu_backward(&da, &gu, &mut dgu, i);
        let da64 = to64(&da);
        check_fd("swiglu d_gate_up", &dgu, &to64(&gu), |v| {
            reference(v, i).iter().zip(&da64).map(|(a, b)| a * b).sum()
        });
        // Extreme gates: the derivative tends to 0 (very negative) and to `up` (very positive).
        let gu = [-1e30f32, 1e30, 2.0, 3.0];
        let mut dgu = [0.0f32; 4];
        swiglu_backward(&[1.0, 1.0], &gu, &mut dgu, 2);
        // Rows are [gate | up]: d_gate = [0, up = 3], d_up = [0, gate = 1e30].
        assert_eq!(dgu, [0.0, 3.0, 0.0, 1e30]);
    }
}
