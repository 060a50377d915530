//! Linear layer backward, mirroring `backend::cpu::matmul::linear` (`y = x W^T + b`, W in
//! PyTorch's `[out, in]` layout): the gradient to the input and to the weight and bias.
//!
//! Legend: M = rows (tokens), K = in features, N = out features.

use gemm::Parallelism;

use crate::backend::cpu::matmul::{gemm_by_columns, gemm_strided, Strided};

/// How [`strided_gemm`] uses the rayon pool.
enum Split {
    /// Output columns split over the pool ([`gemm_by_columns`]).
    Columns,
    /// One thread: the caller already runs several products in parallel.
    Serial,
}

/// `c[M, N] (+)= a[M, K] . b[K, N]` with arbitrary strides for `a` and `b` (element (i, p) of
/// `a` is `a[i * a_rs + p * a_cs]`) and a contiguous `c`. Transposes are expressed as strides,
/// so `dx = dy W` and `dW = dy^T x` need no copies. Runs on the rayon pool.
// BLAS-style: sizes and strides are explicit arguments, like sgemm's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    c: &mut [f32],
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    strided_gemm(
        c,
        (a, a_strides),
        (b, b_strides),
        (m, k, n),
        accumulate,
        Split::Columns,
    );
}

/// `matmul` on the calling thread, for products inside an already parallel loop (one task
/// per sequence and head group), where nesting the pool would only add scheduling.
pub(crate) fn matmul_serial(
    c: &mut [f32],
    a: (&[f32], (usize, usize)),
    b: (&[f32], (usize, usize)),
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    strided_gemm(c, a, b, (m, k, n), accumulate, Split::Serial);
}

fn strided_gemm(
    c: &mut [f32],
    (a, (a_rs, a_cs)): (&[f32], (usize, usize)),
    (b, (b_rs, b_cs)): (&[f32], (usize, usize)),
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    split: Split,
) {
    assert_eq!(c.len(), m * n, "matmul: c is not [M, N]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // The largest element each operand's strides reach must lie inside it.
    assert!(
        (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
        "matmul: a too short"
    );
    assert!(
        (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
        "matmul: b too short"
    );
    // SAFETY: the asserts above bound every index gemm reads in `a` and `b`; `c` is M x N with
    // row stride N and column stride 1, and is borrowed mutably so nothing aliases it.
    unsafe {
        match split {
            Split::Columns => gemm_by_columns(
                (m, k, n),
                c.as_mut_ptr(),
                accumulate,
                Strided::new(a.as_ptr(), a_rs, a_cs),
                Strided::new(b.as_ptr(), b_rs, b_cs),
            ),
            Split::Serial => gemm_strided(
                (m, k, n),
                n,
                c.as_mut_ptr(),
                accumulate,
                Strided::new(a.as_ptr(), a_rs, a_cs),
                Strided::new(b.as_ptr(), b_rs, b_cs),
                Parallelism::None,
            ),
        }
    }
}

/// Gradients of `y[M, N] = x[M, K] . w[N, K]^T + b[N]`, each accumulated into what the
/// buffer holds (so the residual branch and gradient accumulation need no extra adds):
/// `dx[M, K] += dy . w`, `dw[N, K] += dy^T . x`, `db[N] += sum over rows of dy`.
// The three optional outputs are the distinct things a caller may or may not need.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) {
    assert!(
        dy.len() == m * n && x.len() == m * k && w.len() == n * k,
        "linear_backward: shapes"
    );
    if let Some(dx) = dx {
        matmul(dx, dy, (n, 1), w, (k, 1), m, n, k, true);
    }
    if let Some(dw) = dw {
        matmul(dw, dy, (1, n), x, (k, 1), n, m, k, true);
    }
    if let Some(db) = db {
        assert_eq!(db.len(), n, "linear_backward: db is not [N]");
        for row in dy.chunks_exact(n) {
            for (g, &d) in db.iter_mut().zip(row) {
                *g += d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::matmul::linear;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64, GRAD_VS_FD};

    /// The f64 reference forward: `y = x W^T + b`.
    fn reference(x: &[f64], w: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = b[j] + (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum::<f64>();
            }
        }
        y
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        // Both GEMV-sized and GEMM-sized row counts, odd sizes.
        for &(m, k, n) in &[(3, 7, 5), (9, 13, 6)] {
            let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 1.0), rng.vec(n, 1.0));
            let dy = rng.vec(m * n, 1.0);
            // The forward under test agrees with the reference the gradient is taken of.
            let mut y = vec![0.0; m * n];
            linear(&x, &w, Some(&b), &mut y, m, k, n, false);
            let (mut dx, mut dw, mut db) = (vec![0.0; m * k], vec![0.0; n * k], vec![0.0; n]);
            linear_backward(
                &dy,
                &x,
                &w,
                m,
                k,
                n,
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
            );
            let dy64 = to64(&dy);
            let (x64, w64, b64) = (to64(&x), to64(&w), to64(&b));
            let loss = |y: Vec<f64>| y.iter().zip(&dy64).map(|(a, b)| a * b).sum::<f64>();
            check_fd("linear dx", &dx, &x64, |v| {
                loss(reference(v, &w64, &b64, m, k, n))
            });
            check_fd("linear dw", &dw, &w64, |v| {
                loss(reference(&x64, v, &b64, m, k, n))
            });
            check_fd("linear db", &db, &b64, |v| {
                loss(reference(&x64, &w64, v, m, k, n))
            });
            let want = reference(&x64, &w64, &b64, m, k, n);
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            GRAD_VS_FD.check("linear forward", &y, &want).unwrap();
        }
    }
}
