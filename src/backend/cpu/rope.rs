//! Rotary position embeddings (Su et al. 2021) in Hugging Face's `rotate_half` layout: within
//! a head of size D, element i pairs with i + D/2 (not with its neighbour, as llama.cpp's
//! layout does). Frequencies follow transformers' `rope_theta` and `llama3` scaling.

use crate::model::Llama3RopeScaling;

/// Positions whose cos/sin are tabulated at load; later positions are computed on the fly, so
/// a 128k-context config does not cost a 128k-row table.
const TABLE_POSITIONS: usize = 8192;

/// Precomputed cos/sin per (position, frequency). Legend: D = head dim, H2 = D / 2.
#[derive(Clone, Debug)]
pub struct RopeTable {
    inv_freq: Vec<f64>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    positions: usize,
}

impl RopeTable {
    pub fn new(
        head_dim: usize,
        theta: f64,
        scaling: Option<&Llama3RopeScaling>,
        max_pos: usize,
    ) -> Self {
        let inv_freq = inv_freq(head_dim, theta, scaling);
        let h2 = inv_freq.len();
        let positions = max_pos.clamp(1, TABLE_POSITIONS);
        let mut cos = Vec::with_capacity(positions * h2);
        let mut sin = Vec::with_capacity(positions * h2);
        for p in 0..positions {
            for &f in &inv_freq {
                // The angle in f64: p * f loses digits in f32 at large positions.
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        RopeTable {
            inv_freq,
            cos,
            sin,
            positions,
        }
    }

    pub fn head_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// Rotates one head vector `x` (`[D]`) in place for position `pos`:
    /// `x[i] <- x[i] cos - x[i+H2] sin`, `x[i+H2] <- x[i+H2] cos + x[i] sin`.
    pub fn rotate(&self, x: &mut [f32], pos: usize) {
        let h2 = self.inv_freq.len();
        debug_assert_eq!(x.len(), 2 * h2);
        let (lo, hi) = x.split_at_mut(h2);
        if pos < self.positions {
            let cos = &self.cos[pos * h2..(pos + 1) * h2];
            let sin = &self.sin[pos * h2..(pos + 1) * h2];
            for i in 0..h2 {
                let (a, b) = (lo[i], hi[i]);
                lo[i] = a * cos[i] - b * sin[i];
                hi[i] = b * cos[i] + a * sin[i];
            }
        } else {
            for i in 0..h2 {
                let (s, c) = (pos as f64 * self.inv_freq[i]).sin_cos();
                let (s, c) = (s as f32, c as f32);
                let (a, b) = (lo[i], hi[i]);
                lo[i] = a * c - b * s;
                hi[i] = b * c + a * s;
            }
        }
    }

    /// Writes the cos and sin of every frequency at `pos` (`[D/2]` each), the values `rotate`
    /// uses, so another backend can rotate by exactly the same angles.
    pub fn cos_sin_at(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        let h2 = self.inv_freq.len();
        if pos < self.positions {
            cos[..h2].copy_from_slice(&self.cos[pos * h2..(pos + 1) * h2]);
            sin[..h2].copy_from_slice(&self.sin[pos * h2..(pos + 1) * h2]);
        } else {
            for i in 0..h2 {
                let (s, c) = (pos as f64 * self.inv_freq[i]).sin_cos();
                cos[i] = c as f32;
                sin[i] = s as f32;
            }
        }
    }

    /// Rotates every head of every row: `x` is `[M, heads * D]`, row r at position `pos[r]`.
    pub fn rotate_rows(&self, x: &mut [f32], pos: &[usize]) {
        let d = self.head_dim();
        let width = x.len() / pos.len().max(1);
        for (row, &p) in x.chunks_exact_mut(width).zip(pos) {
            for head in row.chunks_exact_mut(d) {
                self.rotate(head, p);
            }
        }
    }
}

/// `1 / theta^(2i/D)` for i < D/2, then transformers' `_compute_llama3_parameters`: long
/// wavelengths are divided by `factor`, short ones kept, and the band between interpolated.
pub fn inv_freq(head_dim: usize, theta: f64, scaling: Option<&Llama3RopeScaling>) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let Some(s) = scaling else { return base };
    let old = s.original_max_position_embeddings as f64;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    base.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / s.factor
            } else {
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;

    /// HF's formula literally: `x * cos(emb) + rotate_half(x) * sin(emb)`, emb = cat(f, f).
    fn naive(x: &[f32], pos: usize, inv: &[f64]) -> Vec<f32> {
        let d = x.len();
        let h2 = d / 2;
        (0..d)
            .map(|i| {
                let ang = pos as f64 * inv[i % h2];
                let rot = if i < h2 { -x[i + h2] } else { x[i - h2] };
                (f64::from(x[i]) * ang.cos() + f64::from(rot) * ang.sin()) as f32
            })
            .collect()
    }

    #[test]
    fn matches_rotate_half_in_and_beyond_the_table() {
        let mut rng = Rng::new(5);
        let d = 14;
        let table = RopeTable::new(d, 10000.0, None, 40);
        for pos in [0, 1, 39, 40, 1000] {
            let x = rng.vec(d, 1.0);
            let mut y = x.clone();
            table.rotate(&mut y, pos);
            let r = naive(&x, pos, &inv_freq(d, 10000.0, None));
            Tolerance::F32_KERNEL
                .check(&format!("rope pos {pos}"), &y, &r)
                .unwrap();
        }
    }

    #[test]
    fn llama3_scaling_keeps_divides_and_smooths() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let base = inv_freq(8, 10000.0, None);
        let scaled = inv_freq(8, 10000.0, Some(&s));
        // Wavelengths 6.3 (< 16: kept), 63 (between: smoothed), 628 and 6283 (> 64: / 8).
        assert_eq!(scaled[0], base[0]);
        let smooth = (64.0 / (2.0 * std::f64::consts::PI / base[1]) - 1.0) / 3.0;
        let want = (1.0 - smooth) * base[1] / 8.0 + smooth * base[1];
        assert!(
            (scaled[1] - want).abs() < 1e-15 && scaled[1] < base[1] && scaled[1] > base[1] / 8.0
        );
        assert_eq!(scaled[2], base[2] / 8.0);
        assert_eq!(scaled[3], base[3] / 8.0);
    }
}
