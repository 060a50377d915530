//! Row reductions written so they vectorise: a sequential `fold(f32::max)` or a running f64
//! sum carries a dependency from one element to the next and runs at one element per few
//! cycles, which made the softmaxes of attention and the log-softmaxes over a 49k vocabulary
//! the second cost of a forward pass after the matrix products.
//!
//! Both work in `LANES` independent accumulators; the sum closes each block of `BLOCK`
//! elements into an f64 total, so rows of any length keep f64-grade accuracy while the inner
//! loop stays in f32 vector registers. The order of operations depends only on the length,
//! so results are the same bits on every run and thread count.

const LANES: usize = 16;
/// Elements per f32 partial sum: each lane adds at most `BLOCK / LANES` = 32 terms in f32.
const BLOCK: usize = 512;

/// The largest element (NaNs are skipped, as `f32::max` does); `-inf` for an empty slice.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            // `>` is false for NaN, so a NaN never replaces the running maximum.
            *a = if v > *a { v } else { *a };
        }
    }
    let m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    chunks.remainder().iter().copied().fold(m, f32::max)
}

/// `sum(f(x[i]))` with f32 lane sums closed into f64 every `BLOCK` elements; `x` is only read.
#[inline(always)]
pub fn sum_map(x: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    x.chunks(BLOCK)
        .fold(0.0, |total, b| total + block_sum(b, f))
}

/// `x[i] = f(x[i])` for every element, returning the new elements' `sum`, in one pass.
#[inline(always)]
pub fn map_sum(x: &mut [f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks_mut(BLOCK) {
        for v in block.iter_mut() {
            *v = f(*v);
        }
        total += block_sum(block, |v| v);
    }
    total
}

#[inline(always)]
fn block_sum(block: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = block.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(f(v))).sum();
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;

    #[test]
    fn max_matches_a_sequential_fold_on_every_length() {
        let mut rng = Rng::new(31);
        for len in [0, 1, 7, 15, 16, 17, 511, 512, 513, 2049] {
            let x = rng.vec(len, 50.0);
            let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x).to_bits(), want.to_bits(), "len {len}");
        }
        assert_eq!(max(&[1.0, f32::NAN, 3.0, -2.0]), 3.0);
    }

    #[test]
    fn sum_is_within_f64_grade_error_of_an_f64_sum() {
        let mut rng = Rng::new(32);
        for len in [0, 1, 15, 16, 17, 511, 512, 513, 49_153] {
            // Positive terms, as softmax sums are: no cancellation to hide behind.
            let x: Vec<f32> = rng.vec(len, 1.0).iter().map(|v| v.abs() + 1e-3).collect();
            let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
            let got = sum_map(&x, |v| v);
            // Each lane adds 32 f32 terms: relative error below 32 * 2^-24, plus f64 closing.
            let bound = exact * 32.0 * f64::from(f32::EPSILON) / 2.0 + 1e-12;
            assert!((got - exact).abs() <= bound, "len {len}: {got} vs {exact}");
            let mut y = x.clone();
            let mapped = map_sum(&mut y, |v| 2.0 * v);
            assert_eq!(mapped, sum_map(&y, |v| v), "len {len}");
            assert_eq!(mapped, sum_map(&x, |v| 2.0 * v), "len {len}");
            assert!(y.iter().zip(&x).all(|(a, b)| *a == 2.0 * b));
        }
    }
}
