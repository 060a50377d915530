//! `e^x` in f32 written with plain arithmetic, comparisons and bit casts only, so that a loop
//! applying it to a slice vectorises. libm's `expf` is an opaque call per element, and the
//! softmaxes, log-softmaxes over a 49k vocabulary and SiLU gates of a training step spent
//! ~12% of its time in it.
//!
//! Method: `x = n ln2 + r` with `n` the nearest integer to `x / ln2` and `|r| <= ln2 / 2`;
//! `e^r` by a degree-7 polynomial (Cephes' `expf` coefficients, a minimax fit on that
//! interval); `2^n` built in the exponent bits as two factors `2^(n/2) 2^(n - n/2)` so both
//! ends of the range (overflow near 88.7, gradual underflow down to -103.9) need no branch.
//! No fused multiply-add is used, so the result is the same bits on every x86 machine,
//! whatever the vector width the compiler picks.

/// `ln(f32::MAX)`: above it `e^x` overflows.
const LN_MAX: f32 = 88.722_84;
/// `ln` of the smallest subnormal: below it `e^x` rounds to zero.
const LN_MIN: f32 = -103.972_08;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n * LN2_HI` is exact for `|n| <= 2^14`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting `1.5 * 2^23` rounds an f32 below 2^22 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x`, within 2 ulp of the exact value for normal results; `+inf` above `LN_MAX`, `0`
/// below `LN_MIN`, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(LN_MIN, LN_MAX);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // n lies in [-150, 128], so both halves are normal powers of two. The integer is read
    // from t's low mantissa bits (t = 1.5 * 2^23 + n exactly) rather than by `n as i32`,
    // whose saturating conversion does not vectorise. For NaN, `er` is NaN and so is y.
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let (n1, n2) = (ni >> 1, ni - (ni >> 1));
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    let y = er * s1 * s2;
    let y = if x > LN_MAX { f32::INFINITY } else { y };
    if x < LN_MIN {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units of the last place between an f32 and the exact (f64) value.
    fn ulps(got: f32, exact: f64) -> f64 {
        let want = exact as f32;
        let ulp = f64::from(f32::from_bits(want.to_bits() + 1) - want);
        (f64::from(got) - exact).abs() / ulp
    }

    #[test]
    fn within_two_ulp_over_the_normal_range() {
        // A dense sweep (every 1e-3, plus an irrational offset so the points are not round).
        let mut worst = (0.0f64, 0.0f32);
        let mut x = -87.0f32;
        while x < 88.5 {
            let e = ulps(exp(x), f64::from(x).exp());
            if e > worst.0 {
                worst = (e, x);
            }
            x += 1e-3 * std::f32::consts::PI / 3.0;
        }
        assert!(worst.0 <= 2.0, "exp({}): {} ulp", worst.1, worst.0);
    }

    #[test]
    fn ends_of_the_range_and_special_values() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // The largest finite results and the subnormal tail, against f64.
        for x in [88.0f32, 88.5, 88.72, -87.5, -95.0, -103.0] {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            let tol = if want < f64::from(f32::MIN_POSITIVE) {
                // Subnormals: absolute error of a couple of their spacing (2^-149).
                3.0 * 2f64.powi(-149)
            } else {
                2.5e-7 * want
            };
            assert!((got - want).abs() <= tol, "exp({x}) = {got}, want {want}");
        }
        assert!(exp(88.72) < f32::INFINITY);
    }

    #[test]
    fn the_vectorised_slice_form_equals_the_scalar_form() {
        let mut v: Vec<f32> = (0..1000).map(|i| (i as f32) * 0.37 - 200.0).collect();
        let want: Vec<f32> = v.iter().map(|&a| exp(a - 1.5)).collect();
        crate::backend::cpu::reduce::map_sum(&mut v, |a| exp(a - 1.5));
        assert_eq!(v, want);
    }
}
