//! Rotary embeddings for training: the forward rotation (the same `rotate_half` layout and
//! the same f64-computed angles as `backend::cpu::rope`) and its backward, which is the
//! rotation by the opposite angle (a rotation's transpose is its inverse).
//!
//! Legend: M = rows, D = head dim, H2 = D / 2.

use crate::backend::cpu::rope::inv_freq;
use crate::model::LlamaConfig;

/// cos/sin for positions `0..positions`, `[positions, H2]`.
#[derive(Clone, Debug)]
pub struct Rotary {
    h2: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rotary {
    /// A table for the positions a training batch uses (its longest sequence).
    pub fn new(config: &LlamaConfig, positions: usize) -> Rotary {
        let f = inv_freq(
            config.head_dim,
            config.rope_theta,
            config.rope_scaling.as_ref(),
        );
        let mut cos = Vec::with_capacity(positions * f.len());
        let mut sin = Vec::with_capacity(positions * f.len());
        for p in 0..positions {
            for &fi in &f {
                let (s, c) = (p as f64 * fi).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        Rotary {
            h2: f.len(),
            cos,
            sin,
        }
    }

    /// Rotates every head of every row of `x` (`[M, heads * D]`) by `sign * angle(pos[r])`:
    /// `lo' = lo cos - sign hi sin`, `hi' = hi cos + sign lo sin`.
    fn rotate(&self, x: &mut [f32], pos: &[usize], sign: f32) {
        let (h2, d) = (self.h2, 2 * self.h2);
        if pos.is_empty() || d == 0 {
            return;
        }
        let width = x.len() / pos.len();
        for (row, &p) in x.chunks_exact_mut(width).zip(pos) {
            let cos = &self.cos[p * h2..(p + 1) * h2];
            let sin = &self.sin[p * h2..(p + 1) * h2];
            for head in row.chunks_exact_mut(d) {
                let (lo, hi) = head.split_at_mut(h2);
                for i in 0..h2 {
                    let (a, b, s) = (lo[i], hi[i], sign * sin[i]);
                    lo[i] = a * cos[i] - b * s;
                    hi[i] = b * cos[i] + a * s;
                }
            }
        }
    }

    /// The forward rotation, in place; `pos[r] < positions` for every row.
    pub fn forward(&self, x: &mut [f32], pos: &[usize]) {
        self.rotate(x, pos, 1.0);
    }

    /// The backward: `dx = R^T dy`, in place on the gradient.
    pub fn backward(&self, dy: &mut [f32], pos: &[usize]) {
        self.rotate(dy, pos, -1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::rope::RopeTable;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    fn config(d: usize) -> LlamaConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/tiny/hf_variant/config.json");
        let bytes = std::fs::read(&path).expect("fixture config");
        let mut c = LlamaConfig::from_json_bytes(&bytes, &path).expect("fixture config parses");
        c.head_dim = d;
        c
    }

    #[test]
    fn gradients_match_finite_differences_and_forward_matches_backend() {
        let mut rng = Rng::new(15);
        let (d, heads) = (8, 2);
        // The variant fixture has llama3 rope scaling, so the scaled frequencies are covered.
        let cfg = config(d);
        let rot = Rotary::new(&cfg, 70);
        let pos = [0usize, 3, 69];
        let x = rng.vec(pos.len() * heads * d, 1.0);
        let mut y = x.clone();
        rot.forward(&mut y, &pos);
        let table = RopeTable::new(d, cfg.rope_theta, cfg.rope_scaling.as_ref(), 128);
        let mut y_backend = x.clone();
        table.rotate_rows(&mut y_backend, &pos);
        assert_eq!(
            y, y_backend,
            "training rotation differs from the inference kernel"
        );
        let dy = rng.vec(x.len(), 1.0);
        let mut dx = dy.clone();
        rot.backward(&mut dx, &pos);
        let f = inv_freq(d, cfg.rope_theta, cfg.rope_scaling.as_ref());
        let dy64 = to64(&dy);
        check_fd("rope dx", &dx, &to64(&x), |v| {
            let mut s = 0.0;
            for (r, &p) in pos.iter().enumerate() {
                for h in 0..heads {
                    let b = r * heads * d + h * d;
                    for i in 0..d / 2 {
                        let (sn, cs) = (p as f64 * f[i]).sin_cos();
                        let (lo, hi) = (v[b + i], v[b + i + d / 2]);
                        s += (lo * cs - hi * sn) * dy64[b + i];
                        s += (hi * cs + lo * sn) * dy64[b + i + d / 2];
                    }
                }
            }
            s
        });
    }
}
