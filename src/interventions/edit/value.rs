//! The optimised value vector: ROME `compute_v` (δ added to layer l's MLP output) and MEMIT
//! `compute_z` (δ added to the residual stream leaving layer L). Both add δ at the subject's
//! last token of every prompt; since the MLP output joins the residual stream unchanged, the
//! two are the same function of δ and share this code (`train::ActivationDelta`).
//!
//! Per step (algorithms.md §6 step 2):
//! `loss = NLL + kl_factor · KL(p_new ‖ p_init) + v_weight_decay · ‖δ‖ / ‖target_init‖²`,
//! NLL = mean over rewriting prompts of (Σ_j −log p(target_j)) / len(target), KL at the
//! subject-last token of the `"{subject} is a"` prompt against the distribution before any
//! step. Stop when the loss is under 5e-2; the last iteration only evaluates; after each Adam
//! step δ is projected onto `‖δ‖ ≤ clamp_norm_factor · ‖target_init‖`. Result
//! `v = target_init + δ`.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Hooks, Llama, Logits};
use crate::optim::{Adam, AdamConfig};
use crate::train::loss::cross_entropy::log_softmax;
use crate::train::{LossTerm, Objective, Target, TrainableSet, Trainer};

use super::key::{keys_at, mlp_output, norm, residual_at};
use super::prompts::{LocatedPrompt, RewritingPrompt};

/// The reference's early-stop threshold (`if loss < 5e-2: break`).
pub const EARLY_STOP: f64 = 5e-2;

/// Where δ is added, which decides what `target_init` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSite {
    /// ROME: the MLP output of the layer; `target_init` is that output.
    MlpOutput,
    /// MEMIT: the residual stream leaving the layer; `target_init` is that hidden state.
    Residual,
}

/// `compute_v` / `compute_z` hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ValueParams {
    /// `v_num_grad_steps`.
    pub steps: usize,
    /// `v_lr` (Adam).
    pub lr: f32,
    /// `v_weight_decay`.
    pub weight_decay: f32,
    /// `clamp_norm_factor`.
    pub clamp_norm_factor: f32,
    /// `kl_factor`.
    pub kl_factor: f32,
}

/// What one request's optimisation asks for, in tokens.
#[derive(Clone, Debug)]
pub struct ValueProblem {
    pub layer: usize,
    pub site: ValueSite,
    /// Rewriting prompts; the first must be the plain template (its subject-last activation is
    /// `target_init`).
    pub rewriting: Vec<RewritingPrompt>,
    pub kl: Vec<LocatedPrompt>,
    pub target: Vec<u32>,
}

/// One iteration's losses (before its step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepLoss {
    /// NLL + KL term.
    pub objective: f64,
    pub weight_decay: f64,
    pub total: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ValueResult {
    #[serde(skip)]
    pub target_init: Vec<f32>,
    #[serde(skip)]
    pub delta: Vec<f32>,
    /// `target_init + delta`.
    #[serde(skip)]
    pub value: Vec<f32>,
    pub losses: Vec<StepLoss>,
    pub delta_norm: f64,
    pub target_init_norm: f64,
    pub early_stopped: bool,
}

/// Optimises δ for one request on the model as it is (weights are not changed).
pub fn optimise_value(
    model: &mut Llama,
    problem: &ValueProblem,
    hp: &ValueParams,
) -> Result<ValueResult> {
    let cfg = model.config().clone();
    let t_len = problem.target.len();
    if t_len == 0 || problem.rewriting.is_empty() {
        return Err(Error::usage(
            "value",
            "no target tokens or no rewriting prompts",
        ));
    }
    if problem.layer >= cfg.num_hidden_layers {
        return Err(Error::usage(
            "layer",
            format!(
                "{} out of range (the model has {} layers)",
                problem.layer, cfg.num_hidden_layers
            ),
        ));
    }
    let plain = &problem.rewriting[0].prompt;
    let target_init = match problem.site {
        ValueSite::MlpOutput => {
            let k = keys_at(model, problem.layer, std::slice::from_ref(plain))?;
            mlp_output(model, problem.layer, &k[0])?
        }
        ValueSite::Residual => {
            residual_at(model, problem.layer, std::slice::from_ref(plain))?.swap_remove(0)
        }
    };
    let init_norm = norm(&target_init);
    if init_norm == 0.0 || !init_norm.is_finite() {
        return Err(Error::Check(format!(
            "target_init at layer {} has norm {init_norm}",
            problem.layer
        )));
    }

    // The batch: rewriting prompts, then the KL prompts.
    let n_rw = problem.rewriting.len();
    let mut batch: Vec<Vec<u32>> = problem
        .rewriting
        .iter()
        .map(|r| r.prompt.tokens.clone())
        .collect();
    batch.extend(problem.kl.iter().map(|p| p.tokens.clone()));
    let rows: Vec<(usize, usize)> = problem
        .rewriting
        .iter()
        .map(|r| r.prompt.subject_last)
        .chain(problem.kl.iter().map(|p| p.subject_last))
        .enumerate()
        .collect();
    let w = 1.0 / (n_rw * t_len) as f32;
    let mut targets = Vec::with_capacity(n_rw * t_len);
    for (s, r) in problem.rewriting.iter().enumerate() {
        for (j, &tok) in problem.target.iter().enumerate() {
            targets.push(Target {
                seq: s,
                pos: r.first_target_pos + j,
                token: tok,
                weight: w,
            });
        }
    }
    let mut objective = Objective::single(LossTerm::CrossEntropy(targets));
    if !problem.kl.is_empty() {
        let kl_rows: Vec<(usize, usize)> = problem
            .kl
            .iter()
            .enumerate()
            .map(|(i, p)| (n_rw + i, p.subject_last))
            .collect();
        let init_log_probs = kl_init(model, &problem.kl)?;
        objective = objective.with(
            hp.kl_factor,
            LossTerm::Kl {
                rows: kl_rows,
                init_log_probs,
            },
        );
    }

    let wd_scale = f64::from(hp.weight_decay) / (init_norm * init_norm);
    let max_norm = f64::from(hp.clamp_norm_factor) * init_norm;
    let mut adam = Adam::new(AdamConfig::adam(hp.lr));
    let mut delta = vec![0f32; cfg.hidden_size];
    let mut losses = Vec::new();
    let mut early_stopped = false;
    // One trainer for every step: the layers up to `problem.layer` see the same batch each
    // step and it runs them once.
    let set = TrainableSet::default().delta(&cfg, "delta", problem.layer, rows);
    let mut trainer = Trainer::new(model, set)?;
    for it in 0..hp.steps {
        trainer.set_delta("delta", &delta)?;
        trainer.zero_grad();
        let objective_loss = trainer.forward_backward(&batch, &objective)?;
        let mut grad = trainer.grads()["delta"].clone();
        let dn = norm(&delta);
        let wd = wd_scale * dn;
        let total = objective_loss + wd;
        losses.push(StepLoss {
            objective: objective_loss,
            weight_decay: wd,
            total,
        });
        if !total.is_finite() {
            return Err(Error::Check(format!(
                "value optimisation diverged at step {it} (loss {total}); lower --lr"
            )));
        }
        if total < EARLY_STOP {
            early_stopped = true;
            break;
        }
        if it + 1 == hp.steps {
            break;
        }
        // d(wd·‖δ‖)/dδ = wd_scale · δ/‖δ‖ (zero at δ = 0, where torch's norm gradient is 0).
        if dn > 0.0 {
            grad.iter_mut()
                .zip(&delta)
                .for_each(|(g, d)| *g += (wd_scale * f64::from(*d) / dn) as f32);
        }
        adam.begin_step();
        adam.update("delta", &mut delta, &grad)?;
        let dn = norm(&delta);
        if dn > max_norm {
            let s = max_norm / dn;
            delta
                .iter_mut()
                .for_each(|d| *d = (f64::from(*d) * s) as f32);
        }
    }
    let value = target_init.iter().zip(&delta).map(|(a, b)| a + b).collect();
    Ok(ValueResult {
        delta_norm: norm(&delta),
        target_init_norm: init_norm,
        target_init,
        delta,
        value,
        losses,
        early_stopped,
    })
}

/// `log_softmax` of the next-token logits at each KL prompt's subject-last token, before
/// any step (the reference records it at iteration 0, where δ = 0).
fn kl_init(model: &Llama, kl: &[LocatedPrompt]) -> Result<Vec<f32>> {
    let batch: Vec<&[u32]> = kl.iter().map(|p| p.tokens.as_slice()).collect();
    let out = model.forward(&batch, Logits::All, &Hooks::default())?;
    let v = model.config().vocab_size;
    let mut lp = vec![0f32; kl.len() * v];
    for (i, p) in kl.iter().enumerate() {
        let logits = out
            .logits_at(i, p.subject_last)
            .ok_or_else(|| Error::Check("KL prompt logits missing".into()))?;
        log_softmax(logits, &mut lp[i * v..(i + 1) * v]);
    }
    Ok(lp)
}
