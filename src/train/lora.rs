//! LoRA adapters (Hu et al. 2021) on named linears, as PEFT's `LoraConfig` builds them:
//! `y = x W^T + (alpha / r) (x A^T) B^T` with A `[r, in]` drawn kaiming-uniform(a = sqrt(5))
//! (bound `1/sqrt(in)`) from a seeded generator and B `[out, r]` zero, so training starts at
//! the base model; `merge` folds `W += (alpha / r) B A` into the weights at the end.
//!
//! Legend: M = rows, r = rank.

use crate::backend::cpu::matmul::linear;
use crate::model::names::{parse_linear, LinearModule, Proj};
use crate::model::LlamaConfig;

use super::linear::linear_backward;

/// Rank, scale and initialisation of a set of adapters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    /// Seeds A's initialisation (PEFT draws from torch's global generator; the values differ,
    /// the distribution is the same).
    pub seed: u64,
}

/// One adapter on the linear `module` (a Hugging Face module name such as
/// `model.layers.0.self_attn.q_proj`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraAdapter {
    pub module: String,
    pub layer: usize,
    pub proj: Proj,
    pub rank: usize,
    /// `alpha / rank`.
    pub scale: f32,
    /// `[rank, in]`.
    pub a: Vec<f32>,
    /// `[out, rank]`.
    pub b: Vec<f32>,
    pub inp: usize,
    pub out: usize,
}

/// SplitMix64: a seeded generator for the initialisation, so runs are reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `(in, out)` of a decoder linear.
pub(crate) fn linear_dims(config: &LlamaConfig, p: Proj) -> (usize, usize) {
    let (c, i) = (config.hidden_size, config.intermediate_size);
    let (qd, kvd) = (
        config.num_attention_heads * config.head_dim,
        config.num_key_value_heads * config.head_dim,
    );
    match p {
        Proj::Q => (c, qd),
        Proj::K | Proj::V => (c, kvd),
        Proj::O => (qd, c),
        Proj::Gate | Proj::Up => (c, i),
        Proj::Down => (i, c),
    }
}

impl LoraAdapter {
    /// A fresh adapter on `module`; `None` if it is not a decoder linear of this config
    /// (the LM head is not supported) or the rank is zero.
    pub fn new(config: &LlamaConfig, module: &str, cfg: &LoraConfig, index: u64) -> Option<Self> {
        let LinearModule::Layer(layer, proj) = parse_linear(module)? else {
            return None;
        };
        if layer >= config.num_hidden_layers || cfg.rank == 0 {
            return None;
        }
        let (inp, out) = linear_dims(config, proj);
        // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in).
        let bound = 1.0 / (inp as f64).sqrt();
        let mut rng = SplitMix(cfg.seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let a = (0..cfg.rank * inp)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
            .collect();
        Some(LoraAdapter {
            module: module.to_string(),
            layer,
            proj,
            rank: cfg.rank,
            scale: cfg.alpha / cfg.rank as f32,
            a,
            b: vec![0.0; out * cfg.rank],
            inp,
            out,
        })
    }

    /// The gradient names of A and B (PEFT's, without its `base_model.model.` prefix and
    /// `.default` adapter name).
    pub fn names(&self) -> [String; 2] {
        [
            format!("{}.lora_A.weight", self.module),
            format!("{}.lora_B.weight", self.module),
        ]
    }

    /// `y[M, out] += scale * (x A^T) B^T`; returns `x A^T` (`[M, r]`) for the backward.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Vec<f32> {
        let mut mid = vec![0.0; m * self.rank];
        linear(x, &self.a, None, &mut mid, m, self.inp, self.rank, false);
        let mut tmp = vec![0.0; m * self.out];
        linear(&mid, &self.b, None, &mut tmp, m, self.rank, self.out, false);
        for (o, t) in y.iter_mut().zip(&tmp) {
            *o += self.scale * t;
        }
        mid
    }

    /// Given `dy` (`[M, out]`), accumulates `dA`, `dB` and the input gradient `dx`.
    // The forward's saved tensors plus the three gradient outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        dy: &[f32],
        x: &[f32],
        mid: &[f32],
        m: usize,
        dx: &mut [f32],
        da: &mut [f32],
        db: &mut [f32],
    ) {
        let dys: Vec<f32> = dy.iter().map(|&g| g * self.scale).collect();
        let mut dmid = vec![0.0; m * self.rank];
        let r = self.rank;
        linear_backward(
            &dys,
            mid,
            &self.b,
            m,
            r,
            self.out,
            Some(&mut dmid),
            Some(db),
            None,
        );
        linear_backward(&dmid, x, &self.a, m, self.inp, r, Some(dx), Some(da), None);
    }

    /// `W[out, in] += scale * B A`.
    pub fn merge_into(&self, w: &mut [f32]) {
        let mut ba = vec![0.0; self.out * self.inp];
        // (B A)[o, i] = sum_k B[o, k] A[k, i]: both row-major, no transposes.
        super::linear::matmul(
            &mut ba,
            &self.b,
            (self.rank, 1),
            &self.a,
            (self.inp, 1),
            self.out,
            self.rank,
            self.inp,
            false,
        );
        for (o, d) in w.iter_mut().zip(&ba) {
            *o += self.scale * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    fn adapter(rng: &mut Rng, inp: usize, out: usize, rank: usize) -> LoraAdapter {
        LoraAdapter {
            module: "m".into(),
            layer: 0,
            proj: Proj::Q,
            rank,
            scale: 2.0,
            a: rng.vec(rank * inp, 1.0),
            b: rng.vec(out * rank, 1.0),
            inp,
            out,
        }
    }

    #[test]
    fn gradients_match_finite_differences_and_merge_equals_the_adapter_path() {
        let mut rng = Rng::new(20);
        let (m, inp, out, r) = (4, 6, 5, 2);
        let ad = adapter(&mut rng, inp, out, r);
        let x = rng.vec(m * inp, 1.0);
        let dy = rng.vec(m * out, 1.0);
        let mut y = vec![0.0; m * out];
        let mid = ad.forward(&x, m, &mut y);
        let (mut dx, mut da, mut db) = (vec![0.0; m * inp], vec![0.0; r * inp], vec![0.0; out * r]);
        ad.backward(&dy, &x, &mid, m, &mut dx, &mut da, &mut db);
        let (x64, a64, b64, dy64) = (to64(&x), to64(&ad.a), to64(&ad.b), to64(&dy));
        // loss = sum dy . scale * (x A^T) B^T
        let f = |x: &[f64], a: &[f64], b: &[f64]| {
            let mut s = 0.0;
            for i in 0..m {
                for o in 0..out {
                    let v: f64 = (0..r)
                        .map(|k| {
                            b[o * r + k]
                                * (0..inp)
                                    .map(|p| x[i * inp + p] * a[k * inp + p])
                                    .sum::<f64>()
                        })
                        .sum();
                    s += 2.0 * v * dy64[i * out + o];
                }
            }
            s
        };
        check_fd("lora dx", &dx, &x64, |v| f(v, &a64, &b64));
        check_fd("lora dA", &da, &a64, |v| f(&x64, v, &b64));
        check_fd("lora dB", &db, &b64, |v| f(&x64, &a64, v));
        // Merging: x (W + s B A)^T equals x W^T + the adapter path.
        let w = rng.vec(out * inp, 1.0);
        let mut merged = w.clone();
        ad.merge_into(&mut merged);
        let mut y_merged = vec![0.0; m * out];
        linear(&x, &merged, None, &mut y_merged, m, inp, out, false);
        let mut y_base = vec![0.0; m * out];
        linear(&x, &w, None, &mut y_base, m, inp, out, false);
        ad.forward(&x, m, &mut y_base);
        crate::backend::cpu::tolerance::Tolerance::F32_KERNEL
            .check("lora merge", &y_merged, &y_base)
            .unwrap();
    }

    #[test]
    fn init_follows_peft() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf/config.json");
        let bytes = std::fs::read(&dir).expect("fixture config");
        let config = LlamaConfig::from_json_bytes(&bytes, &dir).expect("config parses");
        let cfg = LoraConfig {
            rank: 4,
            alpha: 8.0,
            seed: 7,
        };
        let ad =
            LoraAdapter::new(&config, "model.layers.1.self_attn.v_proj", &cfg, 0).expect("adapter");
        let bound = 1.0 / (config.hidden_size as f32).sqrt();
        assert_eq!((ad.a.len(), ad.b.len(), ad.scale), (4 * 48, 16 * 4, 2.0));
        assert!(ad.b.iter().all(|&v| v == 0.0));
        assert!(
            ad.a.iter().all(|v| v.abs() <= bound) && ad.a.iter().any(|v| v.abs() > bound / 2.0)
        );
        assert!(LoraAdapter::new(&config, "lm_head", &cfg, 0).is_none());
        assert!(LoraAdapter::new(&config, "model.layers.2.mlp.up_proj", &cfg, 0).is_none());
    }
}
