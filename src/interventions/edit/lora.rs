//! LoRA editing (EasyEdit's `execute_lora` with PEFT's plain `LoraConfig`; algorithms.md §9):
//! adapters `W + (alpha / r) B A` on the chosen projections of the chosen layers, A
//! kaiming-uniform and B zero (PEFT's initialisation, `train::lora`), trained with
//! `torch.optim.Adam` on the teacher-forced cross-entropy of the targets (Hugging Face's
//! causal-LM loss with the prompt masked: a mean over every target token of the batch), one
//! step per chunk of `batch_size` requests for `steps` epochs, no early stop; then merged into
//! the weights (`merge_and_unload`).
//!
//! EasyEdit's own hparams select AdaLoRA (an SVD-parametrised rank-12 adapter with an
//! orthogonality penalty); this is the plain LoRA the composable-interventions study ran
//! (dropout 0, fp32). No dropout is applied.

use std::ops::Range;

use serde_json::{json, Value};

use super::ft::delta_norms;
use super::targets::{batch_targets, check_examples, eval_loss, EditExample, TargetLoss};
use crate::error::{Error, Result};
use crate::eval::Progress;
use crate::model::names::Proj;
use crate::model::{Llama, LlamaConfig};
use crate::optim::{Adam, AdamConfig};
use crate::train::{LoraConfig, LossTerm, Objective, TrainableSet, Trainer};

/// The validated settings of one LoRA run.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPlan {
    pub rank: usize,
    pub alpha: f32,
    /// Projections adapted in every selected layer.
    pub targets: Vec<Proj>,
    pub layers: Range<usize>,
    pub steps: usize,
    pub lr: f32,
    pub weight_decay: f32,
    /// Seeds A's initialisation.
    pub seed: u64,
    /// Requests per optimiser step; 0 = all of them in one batch.
    pub batch_size: usize,
    /// Stop once an epoch's mean loss is below this (chunks already below it take no step),
    /// as EasyEdit's FT does at 1e-2; `None` runs every epoch, as EasyEdit's LoRA does.
    pub stop_loss: Option<f64>,
}

/// Parses a LoRA target module: PEFT's short names (`q_proj`, `down_proj`) or the path inside
/// a layer (`self_attn.q_proj`).
pub fn parse_target(name: &str) -> Result<Proj> {
    let name = name.trim();
    Proj::ALL
        .into_iter()
        .find(|p| {
            let m = p.module();
            m == name || m.rsplit('.').next() == Some(name)
        })
        .ok_or_else(|| {
            Error::usage(
                "--targets",
                format!(
                    "unknown module `{name}`; expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
                ),
            )
        })
}

fn short(p: Proj) -> &'static str {
    p.module().rsplit('.').next().unwrap_or(p.module())
}

impl LoraPlan {
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
        if self.targets.is_empty() {
            return Err(Error::usage("--targets", "no target module"));
        }
        if self.rank == 0 {
            return Err(Error::usage("--rank", "must be at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::usage("--alpha", "must be a positive number"));
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
        if let Some(x) = self.stop_loss {
            if !(x.is_finite() && x >= 0.0) {
                return Err(Error::usage(
                    "--stop-loss",
                    format!("{x} is not a number >= 0"),
                ));
            }
        }
        Ok(())
    }

    /// Hugging Face module names of the adapted linears, layer by layer.
    pub fn modules(&self) -> Vec<String> {
        self.layers
            .clone()
            .flat_map(|l| {
                self.targets
                    .iter()
                    .map(move |p| format!("model.layers.{l}.{}", p.module()))
            })
            .collect()
    }

    /// Every hyperparameter, for the step record.
    pub fn params(&self) -> Value {
        json!({
            "rank": self.rank,
            "alpha": self.alpha,
            "scale": self.alpha / self.rank as f32,
            "targets": self.targets.iter().map(|&p| short(p)).collect::<Vec<_>>(),
            "layers": [self.layers.start, self.layers.end],
            "dropout": 0.0,
            "init": "PEFT LoraConfig default: A kaiming-uniform(a=sqrt(5)) from SplitMix64(seed), B zero",
            "seed": self.seed,
            "steps": self.steps,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "optimizer": "adam (torch: betas 0.9/0.999, eps 1e-8, L2 weight decay)",
            "loss": TargetLoss::TokenMean.name(),
            "batch_size": self.batch_size,
            "stop_loss": self.stop_loss,
            "merged": true,
        })
    }

    /// The fresh adapters of this plan.
    pub fn adapters(&self, config: &LlamaConfig) -> Result<TrainableSet> {
        self.validate(config)?;
        let cfg = LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            seed: self.seed,
        };
        TrainableSet::default().lora(config, &self.modules(), &cfg)
    }
}

/// What a LoRA run did.
#[derive(Clone, Debug)]
pub struct LoraOutcome {
    /// The merged weights (`<module>.weight`).
    pub changed: Vec<String>,
    /// Mean loss of each epoch (before its steps).
    pub loss_per_step: Vec<f64>,
    pub initial_loss: f64,
    /// After the merge, with the inference forward.
    pub final_loss: f64,
    /// True when `stop_loss` ended the run before `steps` epochs.
    pub early_stopped: bool,
    /// Per adapted module: Frobenius norm of the merged delta `(alpha / r) B A`.
    pub delta_fro: Vec<(String, f64)>,
    /// The trained adapters (A, B), for callers that keep them.
    pub adapters: TrainableSet,
}

impl LoraOutcome {
    pub fn report(&self) -> Value {
        let total = self.delta_fro.iter().map(|d| d.1 * d.1).sum::<f64>().sqrt();
        json!({
            "loss_per_step": self.loss_per_step,
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "epochs_run": self.loss_per_step.len(),
            "early_stopped": self.early_stopped,
            "adapters": self.adapters.lora.len(),
            "delta_fro": self.delta_fro.iter().map(|d| (d.0.clone(), json!(d.1))).collect::<serde_json::Map<_, _>>(),
            "delta_fro_total": total,
        })
    }
}

/// Trains fresh adapters of `plan` on `examples` and merges them into `model`.
pub fn run_lora(
    model: &mut Llama,
    examples: &[EditExample],
    plan: &LoraPlan,
    progress: &Progress,
) -> Result<LoraOutcome> {
    let set = plan.adapters(&model.config)?;
    train_lora(model, set, examples, plan, progress)
}

/// Trains the adapters in `set` (fresh from `plan.adapters`, or set by the caller, as the
/// golden test does with PyTorch's initial A) and merges them into `model`.
pub fn train_lora(
    model: &mut Llama,
    set: TrainableSet,
    examples: &[EditExample],
    plan: &LoraPlan,
    progress: &Progress,
) -> Result<LoraOutcome> {
    plan.validate(&model.config)?;
    check_examples(examples)?;
    if set.lora.is_empty() || !set.weights.is_empty() || !set.deltas.is_empty() {
        return Err(Error::usage("--targets", "a LoRA run trains adapters only"));
    }
    let loss_kind = TargetLoss::TokenMean;
    let bs = if plan.batch_size == 0 {
        examples.len()
    } else {
        plan.batch_size
    };
    let initial_loss = eval_loss(model, examples, loss_kind, 8)?;
    let changed: Vec<String> = set
        .lora
        .iter()
        .map(|ad| format!("{}.weight", ad.module))
        .collect();
    let mut opt = Adam::new(AdamConfig {
        weight_decay: plan.weight_decay,
        ..AdamConfig::adam(plan.lr)
    });
    let mut tr = Trainer::new(model, set)?;
    let mut loss_per_step = Vec::with_capacity(plan.steps);
    let mut early_stopped = false;
    for epoch in 0..plan.steps {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for chunk in examples.chunks(bs) {
            let (seqs, targets) = batch_targets(chunk, loss_kind);
            let objective = Objective::single(LossTerm::CrossEntropy(targets));
            tr.zero_grad();
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
            if plan.stop_loss.is_none_or(|stop| loss >= stop) {
                tr.step(&mut opt)?;
            }
        }
        let mean = sum / count.max(1) as f64;
        loss_per_step.push(mean);
        progress.inc(1);
        if plan.stop_loss.is_some_and(|stop| mean < stop) {
            early_stopped = epoch + 1 < plan.steps;
            break;
        }
    }
    progress.finish();
    let adapters = tr.finish()?;
    // The merged delta itself, `(alpha / r) B A`, as `merge` adds it (the weight difference
    // would add the f32 rounding of `W + delta`).
    let delta_fro = adapters
        .lora
        .iter()
        .map(|ad| {
            let mut d = vec![0.0f32; ad.out * ad.inp];
            ad.merge_into(&mut d);
            (
                format!("{}.weight", ad.module),
                delta_norms(&d, &vec![0.0; d.len()]).0,
            )
        })
        .collect();
    let final_loss = eval_loss(model, examples, loss_kind, 8)?;
    Ok(LoraOutcome {
        changed,
        loss_per_step,
        initial_loss,
        final_loss,
        early_stopped,
        delta_fro,
        adapters,
    })
}
