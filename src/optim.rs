//! Optimisers for the training engine: Adam (Kingma & Ba 2015) and AdamW (Loshchilov &
//! Hutter 2019, decoupled weight decay), following `torch.optim.Adam`/`AdamW`'s
//! single-tensor update step for step, and gradient-norm clipping as
//! `torch.nn.utils.clip_grad_norm_`. State is kept per tensor name, created on first use.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Hyperparameters. `adam` and `adamw` give torch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// 1e-8 in torch; transformers' AdamW (RMU) uses 1e-6.
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW: `p *= 1 - lr * wd` before the update. Adam: `g += wd * p` (L2).
    pub decoupled: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam(lr=lr)`: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f32) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// `torch.optim.AdamW(lr=lr)`: as Adam, with decoupled weight decay 0.01.
    pub fn adamw(lr: f32) -> Self {
        AdamConfig {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::adam(lr)
        }
    }
}

/// First and second moments of one tensor.
#[derive(Clone, Debug)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// Adam or AdamW, by `AdamConfig::decoupled`.
#[derive(Clone, Debug)]
pub struct Adam {
    pub config: AdamConfig,
    step: u64,
    state: BTreeMap<String, Moments>,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Starts a step: every `update` until the next `begin_step` uses its bias correction.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Updates `param` in place from `grad` (torch's `_single_tensor_adam`):
    /// `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
    /// `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
    pub fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32]) -> Result<()> {
        if param.len() != grad.len() {
            return Err(Error::usage(
                "optimizer",
                format!(
                    "`{name}`: gradient length {} differs from the parameter's {}",
                    grad.len(),
                    param.len()
                ),
            ));
        }
        if self.step == 0 {
            return Err(Error::usage("optimizer", "update before begin_step"));
        }
        let AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay: wd,
            decoupled,
        } = self.config;
        let st = self
            .state
            .entry(name.to_string())
            .or_insert_with(|| Moments {
                m: vec![0.0; param.len()],
                v: vec![0.0; param.len()],
            });
        if st.m.len() != param.len() {
            return Err(Error::usage(
                "optimizer",
                format!("`{name}` changed size between steps"),
            ));
        }
        // Scalars in f64, as torch computes them in Python floats.
        let t = self.step as i32;
        let bc1 = 1.0 - f64::from(beta1).powi(t);
        let bc2_sqrt = (1.0 - f64::from(beta2).powi(t)).sqrt() as f32;
        let step_size = (f64::from(lr) / bc1) as f32;
        let decay = 1.0 - lr * wd;
        for ((p, &g0), (m, v)) in param
            .iter_mut()
            .zip(grad)
            .zip(st.m.iter_mut().zip(st.v.iter_mut()))
        {
            let mut g = g0;
            if wd != 0.0 {
                if decoupled {
                    *p *= decay;
                } else {
                    g += wd * *p;
                }
            }
            // torch: exp_avg.lerp_(grad, 1 - beta1), i.e. m + (1 - b1) (g - m).
            *m += (1.0 - beta1) * (g - *m);
            *v = *v * beta2 + (1.0 - beta2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p -= step_size * (*m / denom);
        }
        Ok(())
    }
}

/// Scales every gradient by `min(1, max_norm / (norm + 1e-6))` where `norm` is the L2 norm of
/// all of them together (torch's `clip_grad_norm_`); returns `norm`. A non-finite norm
/// leaves the gradients as they are (torch's default `error_if_nonfinite=False` would scale by
/// NaN; keeping them lets the caller see and report the NaN instead of spreading it).
pub fn clip_grad_norm<'a>(grads: impl IntoIterator<Item = &'a mut [f32]>, max_norm: f32) -> f32 {
    let grads: Vec<&mut [f32]> = grads.into_iter().collect();
    let sq: f64 = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    let norm = sq.sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        for g in grads {
            g.iter_mut().for_each(|x| *x *= coef);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two hand-computed Adam steps on a scalar.
    #[test]
    fn adam_and_adamw_match_the_update_rule() {
        let mut opt = Adam::new(AdamConfig::adamw(0.1));
        let mut p = [1.0f32];
        opt.begin_step();
        opt.update("p", &mut p, &[0.5]).unwrap();
        // t = 1: decay 1 - 0.001; m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25:
        // p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8).
        let want = 0.999f64 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((f64::from(p[0]) - want).abs() < 1e-6, "{} vs {want}", p[0]);
        let mut opt = Adam::new(AdamConfig {
            weight_decay: 0.5,
            ..AdamConfig::adam(0.1)
        });
        let mut p = [2.0f32];
        opt.begin_step();
        opt.update("p", &mut p, &[0.0]).unwrap();
        // L2: g = 0 + 0.5 * 2 = 1, so the step is lr * sign = 0.1.
        assert!((p[0] - 1.9).abs() < 1e-6);
        assert!(opt.update("p", &mut p, &[0.0, 1.0]).is_err());
        assert!(Adam::new(AdamConfig::adam(0.1))
            .update("p", &mut p, &[0.0])
            .is_err());
    }

    #[test]
    fn clipping_follows_torch() {
        let (mut a, mut b) = ([3.0f32], [4.0f32]);
        let norm = clip_grad_norm([&mut a[..], &mut b[..]], 1.0);
        assert_eq!(norm, 5.0);
        assert!(
            (a[0] - 3.0 / (5.0 + 1e-6)).abs() < 1e-7 && (b[0] - 4.0 / (5.0 + 1e-6)).abs() < 1e-7
        );
        let mut c = [0.1f32];
        clip_grad_norm([&mut c[..]], 1.0);
        assert_eq!(c[0], 0.1);
    }
}
