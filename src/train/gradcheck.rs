//! Test support: central finite differences of an f64 reference forward, compared with the
//! f32 analytic gradient under a named tolerance.

use crate::backend::cpu::tolerance::Tolerance;

/// An f32 backward against f64 central differences (step `FD_STEP`, truncation error
/// ~h^2 ~ 1e-8): what remains is f32 rounding in the backward, ~1e-6 relative on the short
/// sums these tests use; a wrong term is off by O(1e-1).
pub const GRAD_VS_FD: Tolerance = Tolerance {
    abs: 2e-5,
    rel: 2e-4,
};

/// Central-difference step for O(1) inputs.
pub const FD_STEP: f64 = 1e-5;

pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// `d f / d x` by central differences.
pub fn fd(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut v = x.to_vec();
    (0..x.len())
        .map(|i| {
            v[i] = x[i] + FD_STEP;
            let up = f(&v);
            v[i] = x[i] - FD_STEP;
            let down = f(&v);
            v[i] = x[i];
            (up - down) / (2.0 * FD_STEP)
        })
        .collect()
}

/// Panics (test failure) when `analytic` differs from the finite differences of `f` at `x`.
pub fn check_fd(what: &str, analytic: &[f32], x: &[f64], f: impl Fn(&[f64]) -> f64) {
    let numeric: Vec<f32> = fd(x, f).iter().map(|&v| v as f32).collect();
    assert!(
        numeric.iter().any(|&v| v != 0.0),
        "{what}: the finite differences are all zero, so the check would prove nothing"
    );
    GRAD_VS_FD.check(what, analytic, &numeric).unwrap();
}
