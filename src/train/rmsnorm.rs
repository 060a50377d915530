//! RMSNorm forward that keeps what its backward needs (the per-row `1/rms`), and the
//! backward: `y = x * r * w` with `r = 1/sqrt(mean(x^2) + eps)`.
//!
//! Legend: M = rows, C = channels.

use rayon::prelude::*;

/// `y[M, C] = x * r * w`, writing `r` (`[M]`) for the backward. The mean square is summed in
/// f64, as `backend::cpu::rmsnorm` does, so both forwards agree bit for bit on `y`.
pub fn rmsnorm_forward(x: &[f32], w: &[f32], eps: f32, y: &mut [f32], r: &mut [f32]) {
    let c = w.len();
    assert!(
        c > 0 && x.len() == y.len() && x.len() == r.len() * c,
        "rmsnorm_forward: shapes"
    );
    x.par_chunks(c)
        .zip(y.par_chunks_mut(c))
        .zip(r.par_iter_mut())
        .for_each(|((xr, yr), ri)| {
            let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            *ri = (1.0 / (ss / c as f64 + f64::from(eps)).sqrt()) as f32;
            for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                *o = v * *ri * g;
            }
        });
}

/// Accumulates `dx[M, C] += r * (dy*w) - x * r^3 * mean(dy*w*x)` and, if given,
/// `dw[C] += sum over rows of dy * x * r`. Accumulating into `dx` is the residual add's
/// backward: the stream's gradient passes through unchanged and the norm's is added to it.
pub fn rmsnorm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    r: &[f32],
    dx: &mut [f32],
    dw: Option<&mut [f32]>,
) {
    let c = w.len();
    assert!(
        c > 0 && dy.len() == x.len() && dx.len() == x.len() && x.len() == r.len() * c,
        "rmsnorm_backward: shapes"
    );
    dx.par_chunks_mut(c)
        .zip(dy.par_chunks(c).zip(x.par_chunks(c)))
        .zip(r.par_iter())
        .for_each(|((dxr, (dyr, xr)), &ri)| {
            let dot: f64 = dyr
                .iter()
                .zip(w)
                .zip(xr)
                .map(|((&d, &g), &v)| f64::from(d * g) * f64::from(v))
                .sum();
            let k = (dot / c as f64) as f32 * ri * ri * ri;
            for (((o, &d), &g), &v) in dxr.iter_mut().zip(dyr).zip(w).zip(xr) {
                *o += ri * d * g - k * v;
            }
        });
    if let Some(dw) = dw {
        assert_eq!(dw.len(), c, "rmsnorm_backward: dw is not [C]");
        // Column sums over rows: summed serially per row so the result does not depend on
        // the thread count.
        for ((dyr, xr), &ri) in dy.chunks_exact(c).zip(x.chunks_exact(c)).zip(r) {
            for ((g, &d), &v) in dw.iter_mut().zip(dyr).zip(xr) {
                *g += d * v * ri;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::rmsnorm::rmsnorm;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    fn reference(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
        let c = w.len();
        x.chunks(c)
            .flat_map(|row| {
                let r = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / c as f64 + eps).sqrt();
                row.iter().zip(w).map(move |(v, g)| v * r * g)
            })
            .collect()
    }

    #[test]
    fn gradients_match_finite_differences_and_forward_matches_backend() {
        let mut rng = Rng::new(12);
        let (m, c, eps) = (5, 11, 1e-5);
        let (x, w, dy) = (rng.vec(m * c, 1.0), rng.vec(c, 1.5), rng.vec(m * c, 1.0));
        let (mut y, mut r) = (vec![0.0; m * c], vec![0.0; m]);
        rmsnorm_forward(&x, &w, eps, &mut y, &mut r);
        let mut y_backend = vec![0.0; m * c];
        rmsnorm(&x, &w, eps, &mut y_backend);
        assert_eq!(
            y, y_backend,
            "training forward differs from the inference kernel"
        );
        let (mut dx, mut dw) = (vec![0.0; m * c], vec![0.0; c]);
        rmsnorm_backward(&dy, &x, &w, &r, &mut dx, Some(&mut dw));
        let (x64, w64, dy64) = (to64(&x), to64(&w), to64(&dy));
        let loss = |y: Vec<f64>| y.iter().zip(&dy64).map(|(a, b)| a * b).sum::<f64>();
        let e = f64::from(eps);
        check_fd("rmsnorm dx", &dx, &x64, |v| loss(reference(v, &w64, e)));
        check_fd("rmsnorm dw", &dw, &w64, |v| loss(reference(&x64, v, e)));
    }
}
