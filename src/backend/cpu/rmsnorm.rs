//! RMSNorm (Zhang & Sennrich 2019, as in HF `LlamaRMSNorm`): `y = x / sqrt(mean(x^2) + eps) * w`.

use rayon::prelude::*;

/// Rows at which the norm is worth splitting over threads.
const PAR_ROWS: usize = 16;

/// Normalises each row of `x` (`[M, C]`) into `y`. Legend: M = rows, C = channels.
/// The mean square is accumulated in f64, so very large or very small rows keep precision.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let c = w.len();
    assert!(
        c > 0 && x.len() == y.len() && x.len().is_multiple_of(c),
        "rmsnorm: shapes"
    );
    let row = |(xr, yr): (&[f32], &mut [f32])| {
        let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let inv = (1.0 / (ss / c as f64 + f64::from(eps)).sqrt()) as f32;
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    };
    if x.len() / c >= PAR_ROWS {
        x.par_chunks(c).zip(y.par_chunks_mut(c)).for_each(row);
    } else {
        x.chunks(c).zip(y.chunks_mut(c)).for_each(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;

    fn naive(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
        let c = w.len();
        x.chunks(c)
            .flat_map(|r| {
                let ms = r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / c as f64;
                let inv = 1.0 / (ms + eps).sqrt();
                r.iter()
                    .zip(w)
                    .map(move |(&v, &g)| (f64::from(v) * inv * f64::from(g)) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn matches_naive_including_extreme_magnitudes() {
        let mut rng = Rng::new(2);
        let c = 77;
        let w = rng.vec(c, 2.0);
        // 3 rows (serial path) and 19 rows (parallel path), then rows scaled by 1e15 and 1e-15:
        // the f64 accumulation keeps both exact where an f32 sum of squares would overflow.
        for (rows, scale) in [(3, 1.0), (19, 1.0), (5, 1e15), (5, 1e-15)] {
            let x = rng.vec(rows * c, scale);
            let mut y = vec![f32::NAN; x.len()];
            rmsnorm(&x, &w, 1e-5, &mut y);
            let r = naive(&x, &w, 1e-5);
            Tolerance::F32_KERNEL
                .check(&format!("rmsnorm rows {rows} scale {scale}"), &y, &r)
                .unwrap();
        }
    }
}
