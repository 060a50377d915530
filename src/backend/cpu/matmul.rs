//! The linear layer `y = x W^T (+ b)` with PyTorch's weight layout: W is `[out, in]` row-major.
//! Prefill-sized products go to the `gemm` crate (packed, SIMD, rayon-parallel); a few rows
//! (decode) go to a rayon GEMV that streams each weight row once, since there the cost is
//! reading W from memory, not arithmetic.

use gemm::Parallelism;
use rayon::prelude::*;

/// Up to this many input rows, the GEMV path is used: it reads W once for all rows, and
/// splits the work over output features, which parallelises even a single row.
const GEMV_MAX_ROWS: usize = 4;
/// Output features per GEMV task: large enough to amortise rayon's scheduling.
const GEMV_CHUNK: usize = 64;

/// `y[M, N] (+)= x[M, K] . w[N, K]^T + bias[N]`.
///
/// Legend: M = rows (tokens), K = in features, N = out features.
/// With `accumulate`, the product is added to what `y` holds (the residual add for free).
// BLAS-style: the sizes are explicit arguments, like sgemm's.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert_eq!(x.len(), m * k, "linear: x is not [M, K]");
    assert_eq!(w.len(), n * k, "linear: w is not [N, K]");
    assert_eq!(y.len(), m * n, "linear: y is not [M, N]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias is not [N]");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            y.fill(0.0);
        }
    } else if m <= GEMV_MAX_ROWS {
        gemv(x, w, y, m, k, n, accumulate);
    } else {
        // SAFETY: the asserts above bound every index gemm touches: x is M x K with row
        // stride K, W^T is read as a K x N matrix with column stride K (row j of w is
        // column j of W^T) and row stride 1, y is M x N with row stride N. The slices do not
        // overlap (`y` is borrowed mutably).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::Rayon(0),
            );
        }
    }
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            for (v, &bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    }
}

/// Few-row product: the output columns are split into chunks, each task reads its slice of
/// W once and forms the dot products with every input row.
fn gemv(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    if m == 1 {
        // One row (decode): the output chunks are contiguous, so tasks write in place and
        // nothing is allocated per token.
        y.par_chunks_mut(GEMV_CHUNK)
            .zip(w.par_chunks(GEMV_CHUNK * k))
            .for_each(|(yc, wc)| {
                for (v, wr) in yc.iter_mut().zip(wc.chunks_exact(k)) {
                    let d = dot(x, wr);
                    *v = if accumulate { *v + d } else { d };
                }
            });
        return;
    }
    // Tasks own disjoint column ranges of y; with M > 1 those ranges are strided, so each
    // task computes into a small local block and the blocks are scattered afterwards.
    let chunks: Vec<Vec<f32>> = w
        .par_chunks(GEMV_CHUNK * k)
        .map(|wc| {
            let nc = wc.len() / k;
            let mut out = vec![0.0f32; m * nc];
            for (j, wr) in wc.chunks_exact(k).enumerate() {
                for i in 0..m {
                    out[i * nc + j] = dot(&x[i * k..(i + 1) * k], wr);
                }
            }
            out
        })
        .collect();
    for (c, block) in chunks.iter().enumerate() {
        let j0 = c * GEMV_CHUNK;
        let nc = block.len() / m;
        for i in 0..m {
            let dst = &mut y[i * n + j0..i * n + j0 + nc];
            let src = &block[i * nc..(i + 1) * nc];
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// A dot product with eight independent accumulators, so the compiler can vectorise it
/// (a single running sum is a serial dependency chain it may not reorder).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 8;
    let mut acc = [0.0f32; L];
    let (ac, ar) = a.split_at(a.len() - a.len() % L);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(L).zip(bc.chunks_exact(L)) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;

    /// The definition, summed in f64.
    fn naive(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = b.map_or(0.0, |b| f64::from(b[j]));
                for p in 0..k {
                    s += f64::from(x[i * k + p]) * f64::from(w[j * k + p]);
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn matches_naive_on_odd_shapes() {
        let mut rng = Rng::new(1);
        // Both paths (GEMV for M <= 4, gemm above), odd sizes, a chunk-straddling N.
        for &(m, k, n) in &[
            (1, 77, 211),
            (3, 48, 130),
            (4, 5, 1),
            (5, 77, 48),
            (37, 129, 67),
        ] {
            let x = rng.vec(m * k, 1.0);
            let w = rng.vec(n * k, 1.0);
            let b = rng.vec(n, 1.0);
            let y0 = rng.vec(m * n, 1.0);
            let mut y = vec![f32::NAN; m * n];
            linear(&x, &w, Some(&b), &mut y, m, k, n, false);
            let r = naive(&x, &w, Some(&b), m, k, n);
            // Sums of K ~ 100 products of O(1) terms: f32 rounding ~1e-5 relative.
            let tol = Tolerance {
                abs: 1e-4,
                rel: 1e-5,
            };
            tol.check(&format!("linear {m}x{k}x{n}"), &y, &r).unwrap();
            let mut acc = y0.clone();
            linear(&x, &w, None, &mut acc, m, k, n, true);
            let r: Vec<f32> = naive(&x, &w, None, m, k, n)
                .iter()
                .zip(&y0)
                .map(|(a, b)| a + b)
                .collect();
            tol.check(&format!("accumulate {m}x{k}x{n}"), &acc, &r)
                .unwrap();
        }
    }
}
