//! FT: constrained fine-tuning of MLP output projections on the edit targets (ROME's FT-L
//! baseline, EasyEdit's `execute_ft`; algorithms.md §8).
//!
//! The selected layers' `mlp.down_proj.weight` are trained with `torch.optim.Adam` (betas
//! (0.9, 0.999), eps 1e-8, L2 weight decay), one optimiser step per chunk of `batch_size`
//! requests, `steps` epochs over the chunks. As the reference: a chunk whose loss is below
//! 1e-2 takes no step; training stops after an epoch whose mean loss (weighted by chunk size) is
//! below 1e-2; with a norm constraint ε every trained element is clamped to `[w0 - ε, w0 + ε]`
//! around its original value after every chunk. The trained weights stay in the model (the
//! reference restores and re-adds the same deltas).

use std::ops::Range;

use serde_json::{json, Value};

use super::targets::{batch_targets, check_examples, eval_loss, EditExample, TargetLoss};
use crate::error::{Error, Result};
use crate::eval::Progress;
use crate::model::{Llama, LlamaConfig};
use crate::optim::{Adam, AdamConfig};
use crate::train::params::weight_mut;
use crate::train::{LossTerm, Objective, TrainableSet, Trainer};

/// The module FT trains (`rewrite_module_tmp` in EasyEdit's Llama hparams).
pub const MODULE: &str = "mlp.down_proj";

/// Below this loss a chunk takes no step, and an epoch below it ends training (the reference's
/// hard-coded 1e-2).
pub const STOP_LOSS: f64 = 1e-2;

/// The validated settings of one FT run.
#[derive(Clone, Debug, PartialEq)]
pub struct FtPlan {
    pub layers: Range<usize>,
    pub steps: usize,
    pub lr: f32,
    pub weight_decay: f32,
    /// `PromptLast` (FT-L) or `PerExampleMean` (FT-M, EasyEdit's `target_new`).
    pub loss: TargetLoss,
    /// L-inf bound on the change of every trained element.
    pub norm_constraint: Option<f32>,
    /// Requests per optimiser step; 0 = all of them in one batch.
    pub batch_size: usize,
}

impl FtPlan {
    /// EasyEdit's FT layer for 32-layer Llamas is 21; for another depth, the layer at the same
    /// relative depth, `round(21 * n / 32)` (20 of SmolLM2's 30, 1 of the tiny fixture's 2).
    pub fn default_layer(n_layers: usize) -> usize {
        ((21 * n_layers + 16) / 32).min(n_layers.saturating_sub(1))
    }

    pub fn validate(&self, config: &LlamaConfig) -> Result<()> {
        if self.layers.is_empty() || self.layers.end > config.num_hidden_layers {
            return Err(Error::usage(
                "--layers",
                format!(
                    "{:?} is empty or outside the model's {} layers",
                    self.layers, config.num_hidden_layers
                ),
            ));
        }
        if self.steps == 0 {
            return Err(Error::usage("--steps", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::usage(
                "--lr",
                format!("{} is not a positive number", self.lr),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::usage(
                "--weight-decay",
                "must be a finite number >= 0",
            ));
        }
        if let Some(e) = self.norm_constraint {
            if !(e.is_finite() && e > 0.0) {
                return Err(Error::usage(
                    "--norm-constraint",
                    format!("{e} is not a positive number"),
                ));
            }
        }
        if self.loss == TargetLoss::TokenMean {
            return Err(Error::usage("--loss", "FT takes prompt-last or target"));
        }
        Ok(())
    }

    /// Every hyperparameter, for the step record.
    pub fn params(&self) -> Value {
        json!({
            "layers": [self.layers.start, self.layers.end],
            "module": MODULE,
            "steps": self.steps,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "optimizer": "adam (torch: betas 0.9/0.999, eps 1e-8, L2 weight decay)",
            "loss": self.loss.name(),
            "norm_constraint": self.norm_constraint,
            "batch_size": self.batch_size,
            "stop_loss": STOP_LOSS,
        })
    }
}

/// What an FT run did.
#[derive(Clone, Debug)]
pub struct FtOutcome {
    /// The trained tensors (what changed in the model).
    pub changed: Vec<String>,
    /// Mean loss of each epoch (before its steps), as the reference logs it.
    pub loss_per_step: Vec<f64>,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub optimizer_steps: u64,
    pub early_stopped: bool,
    /// Per trained tensor: `(name, Frobenius norm of the change, max |change|)`.
    pub deltas: Vec<(String, f64, f64)>,
}

impl FtOutcome {
    pub fn report(&self) -> Value {
        let total = self.deltas.iter().map(|d| d.1 * d.1).sum::<f64>().sqrt();
        json!({
            "loss_per_step": self.loss_per_step,
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "epochs_run": self.loss_per_step.len(),
            "optimizer_steps": self.optimizer_steps,
            "early_stopped": self.early_stopped,
            "delta_fro": self.deltas.iter().map(|d| (d.0.clone(), json!(d.1))).collect::<serde_json::Map<_, _>>(),
            "delta_max_abs": self.deltas.iter().map(|d| (d.0.clone(), json!(d.2))).collect::<serde_json::Map<_, _>>(),
            "delta_fro_total": total,
        })
    }
}

/// `(Frobenius norm, max |x|)` of `a - b` in f64.
pub(crate) fn delta_norms(a: &[f32], b: &[f32]) -> (f64, f64) {
    let mut sq = 0.0f64;
    let mut max = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = f64::from(*x) - f64::from(*y);
        sq += d * d;
        max = max.max(d.abs());
    }
    (sq.sqrt(), max)
}

/// Fine-tunes `model` on `examples` as `plan` says.
pub fn run_ft(
    model: &mut Llama,
    examples: &[EditExample],
    plan: &FtPlan,
    progress: &Progress,
) -> Result<FtOutcome> {
    plan.validate(&model.config)?;
    check_examples(examples)?;
    let set =
        TrainableSet::default().select_weights(&model.config, plan.layers.clone(), &[MODULE])?;
    let originals: Vec<Vec<f32>> = set
        .weights
        .iter()
        .map(|n| Ok(model.weight(n)?.data().to_vec()))
        .collect::<Result<_>>()?;
    let bs = if plan.batch_size == 0 {
        examples.len()
    } else {
        plan.batch_size
    };
    let initial_loss = eval_loss(model, examples, plan.loss, 8)?;
    let mut opt = Adam::new(AdamConfig {
        weight_decay: plan.weight_decay,
        ..AdamConfig::adam(plan.lr)
    });
    let mut loss_per_step = Vec::with_capacity(plan.steps);
    let mut early_stopped = false;
    for epoch in 0..plan.steps {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for chunk in examples.chunks(bs) {
            let (seqs, targets) = batch_targets(chunk, plan.loss);
            let objective = Objective::single(LossTerm::CrossEntropy(targets));
            // A trainer per chunk: its gradients start at zero (the reference's zero_grad),
            // the Adam state lives in `opt`, and the model is free for the clamp below.
            let mut tr = Trainer::new(model, set.clone())?;
            let loss = tr.forward_backward(&seqs, &objective)?;
            if !loss.is_finite() {
                return Err(Error::usage(
                    "--lr",
                    format!(
                        "the loss became {loss} at epoch {epoch}; nothing written (lower --lr?)"
                    ),
                ));
            }
            sum += loss * chunk.len() as f64;
            count += chunk.len();
            if loss >= STOP_LOSS {
                tr.step(&mut opt)?;
            }
            drop(tr);
            if let Some(eps) = plan.norm_constraint {
                for (name, w0) in set.weights.iter().zip(&originals) {
                    for (w, &o) in weight_mut(model, name)?.iter_mut().zip(w0) {
                        // torch.clamp's bounds, computed in f32; NaN stays NaN (and is refused
                        // when writing) where f32::clamp would panic.
                        let (lo, hi) = (o - eps, o + eps);
                        if *w < lo {
                            *w = lo;
                        } else if *w > hi {
                            *w = hi;
                        }
                    }
                }
            }
        }
        let mean = sum / count.max(1) as f64;
        loss_per_step.push(mean);
        progress.inc(1);
        if mean < STOP_LOSS {
            early_stopped = epoch + 1 < plan.steps;
            break;
        }
    }
    progress.finish();
    let final_loss = eval_loss(model, examples, plan.loss, 8)?;
    let deltas = set
        .weights
        .iter()
        .zip(&originals)
        .map(|(n, w0)| {
            let (fro, max) = delta_norms(model.weight(n)?.data(), w0);
            Ok((n.clone(), fro, max))
        })
        .collect::<Result<_>>()?;
    Ok(FtOutcome {
        changed: set.weights,
        loss_per_step,
        initial_loss,
        final_loss,
        optimizer_steps: opt.steps(),
        early_stopped,
        deltas,
    })
}
