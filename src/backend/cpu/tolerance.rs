//! Typed comparison tolerances (style P7): `|x - y| <= abs + rel * |reference|`, with named
//! presets and a failure report that gives the count, the worst element and the mean error.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

impl Tolerance {
    /// f32 kernels against an f32 naive reference of the same math (summation order differs).
    pub const F32_KERNEL: Tolerance = Tolerance {
        abs: 1e-5,
        rel: 1e-5,
    };
    /// The whole forward pass in f32 against a float64 PyTorch reference (the golden files):
    /// O(1) logits through a few layers accumulate ~1e-6 rounding; 1e-4 leaves headroom
    /// without hiding a real bug (a wrong rope or mask moves logits by ~1e-1).
    pub const F32_FORWARD: Tolerance = Tolerance {
        abs: 1e-4,
        rel: 0.0,
    };

    /// Compares `actual` with `reference`; on failure the error says how and where.
    pub fn check(&self, what: &str, actual: &[f32], reference: &[f32]) -> Result<Stats, String> {
        if actual.len() != reference.len() {
            return Err(format!(
                "{what}: length {} differs from the reference's {}",
                actual.len(),
                reference.len()
            ));
        }
        let stats = Stats::of(actual, reference, *self);
        if stats.failures == 0 {
            Ok(stats)
        } else {
            Err(format!(
                "{what}: {stats} (tolerance abs {} rel {})",
                self.abs, self.rel
            ))
        }
    }
}

/// Error statistics of a comparison.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub n: usize,
    pub failures: usize,
    pub max_abs: f32,
    pub max_index: usize,
    pub mean_abs: f64,
}

impl Stats {
    pub fn of(actual: &[f32], reference: &[f32], tol: Tolerance) -> Stats {
        let mut s = Stats {
            n: actual.len(),
            ..Stats::default()
        };
        let mut sum = 0.0f64;
        for (i, (&a, &r)) in actual.iter().zip(reference).enumerate() {
            let d = (a - r).abs();
            // A NaN on either side is a failure, never silently within tolerance.
            let ok = d <= tol.abs + tol.rel * r.abs();
            if !ok {
                s.failures += 1;
            }
            if d.is_nan() || d > s.max_abs {
                s.max_abs = d;
                s.max_index = i;
            }
            sum += f64::from(d);
        }
        s.mean_abs = if s.n == 0 { 0.0 } else { sum / s.n as f64 };
        s
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements out of tolerance, max abs diff {:e} at index {}, mean abs diff {:e}",
            self.failures, self.n, self.max_abs, self.max_index, self.mean_abs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_worst_element_and_nan() {
        let t = Tolerance::F32_KERNEL;
        assert!(t.check("same", &[1.0, 2.0], &[1.0, 2.0]).is_ok());
        let err = t
            .check("off", &[1.0, 2.5, 3.0], &[1.0, 2.0, 3.0])
            .unwrap_err();
        assert!(err.contains("1 of 3") && err.contains("index 1"), "{err}");
        assert!(t.check("nan", &[f32::NAN], &[0.0]).is_err());
        assert!(t.check("len", &[1.0], &[1.0, 2.0]).is_err());
    }
}
