//! Dense f64 linear algebra on row-major square matrices: Cholesky, Cholesky inverse,
//! triangular solves. A thin layer over the `faer` crate (<https://codeberg.org/sarah-quinones/faer>),
//! so that callers keep plain `Vec<f64>` buffers and never see faer types.
//!
//! Why f64: GPTQ/SparseGPT factor the damped Hessian three times (Cholesky, inverse,
//! Cholesky of the inverse); in f32 the reference (IST-DASLab/gptq) fails with "not positive
//! definite" on ill-conditioned layers (AutoGPTQ#196, #572). Doing the chain in f64 removes
//! most of those failures; the damping retry in `interventions::compress::hessian` handles the rest.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, MatRef, Side};

/// A Cholesky factorisation failed: the leading minor of order `pivot + 1` is not positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotPositiveDefinite {
    /// Zero-based index of the first non-positive pivot.
    pub pivot: usize,
}

impl std::fmt::Display for NotPositiveDefinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "matrix is not positive definite (leading minor of order {})",
            self.pivot + 1
        )
    }
}

fn to_mat(a: &[f64], n: usize) -> Mat<f64> {
    assert_eq!(a.len(), n * n, "linalg: buffer is not n x n");
    Mat::from_fn(n, n, |i, j| a[i * n + j])
}

fn from_mat(m: MatRef<'_, f64>) -> Vec<f64> {
    let (r, c) = (m.nrows(), m.ncols());
    let mut out = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            out.push(m[(i, j)]);
        }
    }
    out
}

/// Lower Cholesky factor `L` of a symmetric positive-definite `a` (`a = L Lᵀ`), row-major n×n.
/// Only the lower triangle of `a` is read. Also fails on a NaN pivot.
pub fn cholesky_lower(a: &[f64], n: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
    let m = to_mat(a, n);
    match m.llt(Side::Lower) {
        Ok(llt) => Ok(from_mat(llt.L())),
        Err(faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index }) => {
            Err(NotPositiveDefinite { pivot: index })
        }
    }
}

/// Upper Cholesky factor `U` of `a` (`a = Uᵀ U`), as `torch.linalg.cholesky(a, upper=True)`.
pub fn cholesky_upper(a: &[f64], n: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
    let l = cholesky_lower(a, n)?;
    Ok(transpose(&l, n))
}

/// `a⁻¹` from the lower Cholesky factor `l` of `a` (as `torch.cholesky_inverse(l)`); symmetric.
pub fn cholesky_inverse(l: &[f64], n: usize) -> Vec<f64> {
    // faer's `Llt::inverse` needs its own factorisation object, which cannot be built from a
    // given L; a triangular solve against the identity costs the same.
    let mut inv = identity(n);
    solve_lower_in_place(l, n, &mut inv, n);
    // inv = L⁻¹; a⁻¹ = L⁻ᵀ L⁻¹ = (L⁻¹)ᵀ (L⁻¹).
    let linv = to_mat(&inv, n);
    let prod = linv.transpose() * &linv;
    let mut out = from_mat(prod.as_ref());
    symmetrize(&mut out, n);
    out
}

/// `a⁻¹` of a symmetric positive-definite `a` through its Cholesky factor (faer's LLᵀ inverse).
pub fn spd_inverse(a: &[f64], n: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
    let m = to_mat(a, n);
    let llt = m.llt(Side::Lower).map_err(|e| match e {
        faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index } => {
            NotPositiveDefinite { pivot: index }
        }
    })?;
    let mut out = from_mat(llt.inverse().as_ref());
    symmetrize(&mut out, n);
    Ok(out)
}

/// Solves `L X = B` in place for a lower-triangular `l` (n×n) and `b` (n×k, row-major).
pub fn solve_lower_in_place(l: &[f64], n: usize, b: &mut [f64], k: usize) {
    assert_eq!(b.len(), n * k, "linalg: rhs is not n x k");
    let lm = to_mat(l, n);
    let mut bm = Mat::from_fn(n, k, |i, j| b[i * k + j]);
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(
        lm.as_ref(),
        bm.as_mut(),
        faer::Par::Seq,
    );
    b.copy_from_slice(&from_mat(bm.as_ref()));
}

/// Solves `U X = B` in place for an upper-triangular `u` (n×n) and `b` (n×k, row-major).
pub fn solve_upper_in_place(u: &[f64], n: usize, b: &mut [f64], k: usize) {
    assert_eq!(b.len(), n * k, "linalg: rhs is not n x k");
    let um = to_mat(u, n);
    let mut bm = Mat::from_fn(n, k, |i, j| b[i * k + j]);
    faer::linalg::triangular_solve::solve_upper_triangular_in_place(
        um.as_ref(),
        bm.as_mut(),
        faer::Par::Seq,
    );
    b.copy_from_slice(&from_mat(bm.as_ref()));
}

/// The GPTQ factor: upper Cholesky factor `U` of `a⁻¹` (`a⁻¹ = Uᵀ U`), computed as the reference
/// does (`cholesky` → `cholesky_inverse` → `cholesky(upper=True)`). Fails if either
/// factorisation meets a non-positive pivot.
pub fn inverse_cholesky_upper(a: &[f64], n: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
    let inv = spd_inverse(a, n)?;
    cholesky_upper(&inv, n)
}

/// `C[m, n] -= A[m, k] · B[k, n]` in f32 with the `gemm` crate; all three are row-major views
/// with row strides `c_rs`, `a_rs`, `b_rs` (column stride 1) into the given slices.
/// Legend: m rows of the output, n its columns, k the shared dimension.
#[allow(clippy::too_many_arguments)]
pub fn sub_matmul_f32(
    c: &mut [f32],
    c_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_rs: usize,
    m: usize,
    k: usize,
    n: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // Bounds of the last element of each view: these make the raw-pointer call below sound.
    assert!(
        c_rs >= n && (m - 1) * c_rs + n <= c.len(),
        "sub_matmul_f32: C view"
    );
    assert!(
        a_rs >= k && (m - 1) * a_rs + k <= a.len(),
        "sub_matmul_f32: A view"
    );
    assert!(
        b_rs >= n && (k - 1) * b_rs + n <= b.len(),
        "sub_matmul_f32: B view"
    );
    let par = if m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every strided access inside the slices; C does not alias
    // A or B (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            true,
            a.as_ptr(),
            1,
            a_rs as isize,
            b.as_ptr(),
            1,
            b_rs as isize,
            1.0f32,
            -1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// `A · Bᵀ` in f64: `a` is `[m, k]`, `b` is `[n, k]`, both row-major; returns `[m, n]`
/// row-major. `parallel` lets the `gemm` crate split the work over rayon's threads (for a
/// caller that is not itself inside a parallel loop). Legend: m rows of A, n rows of B, k the
/// shared dimension.
pub fn matmul_nt_f64(
    a: &[f64],
    b: &[f64],
    m: usize,
    n: usize,
    k: usize,
    parallel: bool,
) -> Vec<f64> {
    assert_eq!(a.len(), m * k, "matmul_nt_f64: A is not m x k");
    assert_eq!(b.len(), n * k, "matmul_nt_f64: B is not n x k");
    let mut c = vec![0f64; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // SAFETY: lhs A (element (i, p) at i*k + p), rhs Bᵀ (element (p, j) at j*k + p), dst
    // row-major m×n; the asserts above keep every index inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0f64,
            1.0f64,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
    c
}

/// `Xᵀ X` (`[n, n]`, f32) of a row-major `x` of `t` rows and `n` columns.
/// Legend: t tokens, n features.
pub fn gram_f32(x: &[f32], t: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), t * n, "gram_f32: x is not t x n");
    let mut g = vec![0f32; n * n];
    if t == 0 || n == 0 {
        return g;
    }
    let par = if t * n * n >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: lhs is Xᵀ (element (i, s) at s*n + i), rhs is X (element (s, j) at s*n + j),
    // dst is n×n row-major; all indices stay below t*n and n*n.
    unsafe {
        gemm::gemm(
            n,
            n,
            t,
            g.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            n as isize,
            1,
            x.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
    g
}

pub fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            t[j * n + i] = a[i * n + j];
        }
    }
    t
}

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}

/// Averages the two triangles so a computed inverse is exactly symmetric (the next Cholesky
/// reads one triangle only; asymmetric round-off would otherwise depend on which one).
fn symmetrize(a: &mut [f64], n: usize) {
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    c[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        c
    }

    /// A deterministic SPD matrix `B Bᵀ + n I` from a small LCG.
    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let b: Vec<f64> = (0..n * n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect();
        let bt = transpose(&b, n);
        let mut a = matmul(&b, &bt, n);
        for i in 0..n {
            a[i * n + i] += n as f64 * 0.1;
        }
        a
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn cholesky_reconstructs_and_inverts() {
        let n = 37;
        let a = spd(n, 3);
        let l = cholesky_lower(&a, n).unwrap();
        for i in 0..n {
            for j in i + 1..n {
                assert_eq!(l[i * n + j], 0.0, "L must be lower triangular");
            }
        }
        let llt = matmul(&l, &transpose(&l, n), n);
        assert!(max_abs_diff(&llt, &a) < 1e-12 * n as f64);
        let inv = cholesky_inverse(&l, n);
        let eye = matmul(&inv, &a, n);
        assert!(max_abs_diff(&eye, &identity(n)) < 1e-10);
        let inv2 = spd_inverse(&a, n).unwrap();
        assert!(max_abs_diff(&inv, &inv2) < 1e-12);
    }

    #[test]
    fn inverse_cholesky_upper_factors_the_inverse() {
        let n = 20;
        let a = spd(n, 11);
        let u = inverse_cholesky_upper(&a, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U must be upper triangular");
            }
        }
        let utu = matmul(&transpose(&u, n), &u, n);
        let inv = spd_inverse(&a, n).unwrap();
        assert!(max_abs_diff(&utu, &inv) < 1e-12);
    }

    #[test]
    fn triangular_solves() {
        let n = 9;
        let a = spd(n, 5);
        let l = cholesky_lower(&a, n).unwrap();
        let u = transpose(&l, n);
        let x: Vec<f64> = (0..n * 2).map(|i| i as f64 - 4.0).collect();
        // b = L x (n×2)
        let mut b = vec![0.0; n * 2];
        for i in 0..n {
            for j in 0..2 {
                b[i * 2 + j] = (0..n).map(|k| l[i * n + k] * x[k * 2 + j]).sum();
            }
        }
        solve_lower_in_place(&l, n, &mut b, 2);
        assert!(max_abs_diff(&b, &x) < 1e-12);
        for i in 0..n {
            for j in 0..2 {
                b[i * 2 + j] = (0..n).map(|k| u[i * n + k] * x[k * 2 + j]).sum();
            }
        }
        solve_upper_in_place(&u, n, &mut b, 2);
        assert!(max_abs_diff(&b, &x) < 1e-12);
    }

    #[test]
    fn non_positive_definite_reports_pivot() {
        // diag(1, -1, 1): the second leading minor is negative.
        let a = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(cholesky_lower(&a, 3), Err(NotPositiveDefinite { pivot: 1 }));
        let nan = [f64::NAN, 0.0, 0.0, 1.0];
        assert!(cholesky_lower(&nan, 2).is_err());
    }

    #[test]
    fn f32_products_match_naive() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * 9).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * 4).map(|i| (i % 7) as f32 * 0.5).collect();
        let mut c = vec![1.0f32; m * 6];
        sub_matmul_f32(&mut c, 6, &a, 9, &b, 4, m, k, n);
        for i in 0..m {
            for j in 0..6 {
                let want = if j < n {
                    1.0 - (0..k).map(|p| a[i * 9 + p] * b[p * 4 + j]).sum::<f32>()
                } else {
                    1.0
                };
                assert_eq!(c[i * 6 + j], want, "({i},{j})");
            }
        }
        let x: Vec<f32> = (0..4 * 3).map(|i| i as f32 - 6.0).collect();
        let g = gram_f32(&x, 4, 3);
        for i in 0..3 {
            for j in 0..3 {
                let want: f32 = (0..4).map(|s| x[s * 3 + i] * x[s * 3 + j]).sum();
                assert_eq!(g[i * 3 + j], want);
            }
        }
    }
}
