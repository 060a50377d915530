//! The SwiGLU gate of the Llama MLP: `act = silu(gate) * up`, `silu(x) = x * sigmoid(x)`.

use rayon::prelude::*;

use super::exp::exp;
use super::simd::wide_fn;

/// `gate_up` is `[M, 2I]` with each row `[gate (I) | up (I)]` (the fused gate/up projection);
/// writes `act` `[M, I]`. Legend: M = rows, I = intermediate size.
pub fn swiglu(gate_up: &[f32], act: &mut [f32], i: usize) {
    assert!(
        i > 0 && gate_up.len() == 2 * act.len() && act.len().is_multiple_of(i),
        "swiglu: shapes"
    );
    let row = |(gu, a): (&[f32], &mut [f32])| {
        let (g, u) = gu.split_at(i);
        swiglu_row(g, u, a);
    };
    if act.len() / i >= 16 {
        gate_up
            .par_chunks(2 * i)
            .zip(act.par_chunks_mut(i))
            .for_each(row);
    } else {
        gate_up.chunks(2 * i).zip(act.chunks_mut(i)).for_each(row);
    }
}

wide_fn! {
    fn swiglu_row(g: &[f32], u: &[f32], a: &mut [f32]) {
        for ((o, &gv), &uv) in a.iter_mut().zip(g).zip(u) {
            *o = silu(gv) * uv;
        }
    }
}

/// `x * sigmoid(x)` as `x / (1 + e^-x)`, branch-free so the row loop vectorises: for very
/// negative x, `e^-x` overflows to inf and the quotient is the correct (signed) zero.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;

    #[test]
    fn matches_naive_and_is_finite_at_extremes() {
        let mut rng = Rng::new(3);
        let (m, i) = (21, 77);
        let gu = rng.vec(m * 2 * i, 8.0);
        let mut act = vec![f32::NAN; m * i];
        swiglu(&gu, &mut act, i);
        let r: Vec<f32> = (0..m * i)
            .map(|p| {
                let (row, col) = (p / i, p % i);
                let g = f64::from(gu[row * 2 * i + col]);
                let u = f64::from(gu[row * 2 * i + i + col]);
                (g / (1.0 + (-g).exp()) * u) as f32
            })
            .collect();
        Tolerance::F32_KERNEL.check("swiglu", &act, &r).unwrap();
        assert_eq!(silu(-1e30), 0.0);
        assert_eq!(silu(1e30), 1e30);
        assert!(silu(-100.0).is_finite() && silu(100.0) == 100.0);
    }
}
