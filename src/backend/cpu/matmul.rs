//! The linear layer `y = x W^T (+ b)` with PyTorch's weight layout: W is `[out, in]` row-major.
//! Prefill-sized products go to the `gemm` crate (packed, SIMD; the output columns split over
//! the rayon pool, [`gemm_by_columns`]); a few rows
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
            gemm_by_columns(
                (m, k, n),
                y.as_mut_ptr(),
                accumulate,
                Strided::new(x.as_ptr(), k, 1),
                Strided::new(w.as_ptr(), 1, k),
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

/// A read-only operand of [`gemm_by_columns`]: where it starts and its row and column strides,
/// in elements.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Strided {
    pub(crate) fn new(ptr: *const f32, rs: usize, cs: usize) -> Strided {
        Strided {
            ptr,
            rs: rs as isize,
            cs: cs as isize,
        }
    }
}

/// The raw pointers a column run needs, handed to rayon's workers.
#[derive(Clone, Copy)]
struct Operands {
    c: *mut f32,
    a: Strided,
    b: Strided,
}
// SAFETY: each worker writes a disjoint run of c's columns and only reads a and b, which the
// caller keeps alive and unchanged for the whole call.
unsafe impl Send for Operands {}
unsafe impl Sync for Operands {}

/// Each column run repacks all of a's rows, so runs are at least this wide: with eight runs of
/// 72 columns on SmolLM2's 576-wide products, a first-pass RMU step took 209 ms against 152 ms
/// with two runs of 288 (bench/RESULTS.md, session 11).
const MIN_RUN_WIDTH: usize = 256;
/// At most this many runs per product.
const MAX_RUNS: usize = 8;
/// Products with fewer rows get two runs at most: at ~100 rows, six and eight runs of 1536-
/// and 3072-wide products made a first-pass RMU step take 136 ms against 94 ms with two
/// (bench/RESULTS.md, session 11).
const MANY_RUNS_FROM_ROWS: usize = 512;
/// Run widths are multiples of this (SmolLM2's 576, 960, 1536 and 3072 split evenly).
const COLUMN_QUANTUM: usize = 8;
/// Products with fewer rows are too small to be worth splitting (gemm's own split takes them).
const MIN_SPLIT_ROWS: usize = 16;

/// `c[M, N] (+)= a[M, K] . b[K, N]`, c row-major (row stride N), with the output columns
/// split into an even number of runs (2 to [`MAX_RUNS`], from M and N alone) spread over the rayon
/// pool, each a serial gemm. gemm's own rayon split keeps about 1.1-1.4 of 2 cores busy on a
/// training step's products (a few hundred rows, K of 576 to 3072), where this keeps both.
/// The runs depend on the shape only, never on the pool size, so neither do the bits (gemm
/// picks its K blocking from each call's shape; a test checks 1 to 16 threads).
///
/// # Safety
/// `a` must be readable at every `(i, p)` for `i < m`, `p < k` through its strides, `b` at
/// every `(p, j)` for `p < k`, `j < n`, and `c` writable for `m * n` elements that nothing else
/// reads or writes during the call.
pub(crate) unsafe fn gemm_by_columns(
    (m, k, n): (usize, usize, usize),
    c: *mut f32,
    accumulate: bool,
    a: Strided,
    b: Strided,
) {
    // Even, so that two threads share the runs evenly.
    let max_runs = if m >= MANY_RUNS_FROM_ROWS {
        MAX_RUNS
    } else {
        2
    };
    let runs = (n / MIN_RUN_WIDTH).min(max_runs) & !1;
    if m < MIN_SPLIT_ROWS || runs < 2 {
        // SAFETY: as the caller vouched, for the whole product.
        unsafe { gemm_strided((m, k, n), n, c, accumulate, a, b, Parallelism::Rayon(0)) };
        return;
    }
    // Under n: runs >= 2 means n >= 2 * MIN_RUN_WIDTH.
    let width = n.div_ceil(runs).next_multiple_of(COLUMN_QUANTUM);
    let ops = Operands { c, a, b };
    let run = move |j0: usize| {
        let ops = ops;
        let cols = width.min(n - j0);
        let b = Strided {
            // SAFETY: column j0 of b lies inside the range the caller vouched for.
            ptr: unsafe { ops.b.ptr.offset(j0 as isize * ops.b.cs) },
            ..ops.b
        };
        // SAFETY: columns j0..j0 + cols of c and of b lie inside the ranges the caller vouched
        // for, and no other run touches these columns of c.
        unsafe {
            gemm_strided(
                (m, k, cols),
                n,
                ops.c.add(j0),
                accumulate,
                ops.a,
                b,
                Parallelism::None,
            )
        };
    };
    (0..n.div_ceil(width))
        .into_par_iter()
        .for_each(|i| run(i * width));
}

/// `c[M, N] (+)= a[M, K] . b[K, N]` through gemm, c with row stride `c_rs` and column
/// stride 1.
///
/// # Safety
/// As [`gemm_by_columns`], with c's rows `c_rs` apart.
pub(crate) unsafe fn gemm_strided(
    (m, k, n): (usize, usize, usize),
    c_rs: usize,
    c: *mut f32,
    accumulate: bool,
    a: Strided,
    b: Strided,
    parallelism: Parallelism,
) {
    // SAFETY: the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_rs as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
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

    /// Sums of up to 1536 products of O(1) terms (|sum| ~ 40): f32 rounding ~1e-5 relative to
    /// the terms' scale; a dropped or doubled product moves a sum by ~0.5.
    const LONG_SUM: Tolerance = Tolerance {
        abs: 2e-4,
        rel: 1e-5,
    };

    /// The column runs give the same bits at every pool size, split or not, on plain
    /// and transposed operands (as the backward passes them), accumulating or not; and the
    /// result is the definition within f32 rounding.
    #[test]
    fn column_split_gives_the_same_bits_at_every_pool_size() {
        let mut rng = Rng::new(3);
        for &(m, k, n) in &[
            (37, 129, 67),
            (300, 576, 960),
            (9, 1536, 17),
            (64, 300, 1536),
            (65, 72, 613),
            (100, 64, 3072),
            (520, 40, 1100),
        ] {
            let a = rng.vec(m * k, 1.0);
            let b = rng.vec(k * n, 1.0);
            let c0 = rng.vec(m * n, 1.0);
            // (a_rs, a_cs), (b_rs, b_cs): row-major a and b, then each read transposed.
            for (sa, sb) in [((k, 1), (n, 1)), ((1, m), (1, k))] {
                for accumulate in [false, true] {
                    let run = |threads: usize| {
                        let mut c = c0.clone();
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        // SAFETY: a is m x k and b is k x n under either stride pair; c is
                        // m x n and owned here.
                        pool.install(|| unsafe {
                            gemm_by_columns(
                                (m, k, n),
                                c.as_mut_ptr(),
                                accumulate,
                                Strided::new(a.as_ptr(), sa.0, sa.1),
                                Strided::new(b.as_ptr(), sb.0, sb.1),
                            )
                        });
                        c
                    };
                    let one = run(1);
                    for threads in [2, 3, 5, 16] {
                        let got = run(threads);
                        assert!(
                            one.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{m}x{k}x{n} strides {sa:?} {sb:?} acc {accumulate}: {threads} threads differ in bits"
                        );
                    }
                    let want: Vec<f32> = (0..m * n)
                        .map(|ij| {
                            let (i, j) = (ij / n, ij % n);
                            let dot: f64 = (0..k)
                                .map(|p| {
                                    f64::from(a[i * sa.0 + p * sa.1])
                                        * f64::from(b[p * sb.0 + j * sb.1])
                                })
                                .sum();
                            (dot + if accumulate { f64::from(c0[ij]) } else { 0.0 }) as f32
                        })
                        .collect();
                    LONG_SUM.check("gemm_by_columns", &one, &want).unwrap();
                }
            }
        }
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
