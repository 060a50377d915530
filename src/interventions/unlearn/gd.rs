//! The gradient-difference core shared by `ga` and `gd` (TOFU's `CustomTrainerForgetting`,
//! the study's `apply_ga`): each step ascends the mean next-token cross-entropy of a forget
//! batch and, for GD, descends `retain_weight` x that of a retain batch, then takes one Adam
//! step on the trainable set. GA is this with no retain term.
//!
//! Losses are Hugging Face's causal-LM mean over the batch's scored tokens; batches are packed
//! without padding, so every scored token is a real one.

use std::ops::Range;

use serde_json::{json, Value};

use super::corpus::{step_batches, TokenCorpus};
use super::{check_finite, Outcome};
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::optim::{Adam, AdamConfig};
use crate::train::{LossTerm, Objective, Target, TrainableSet, Trainer};

/// Settings of a GA/GD run.
#[derive(Clone, Debug, PartialEq)]
pub struct GdSettings {
    /// Decoder layers whose every tensor is trained (the study: the upper half). The final
    /// norm is trained too, and an untied LM head (a tied head is the embedding table, which
    /// the study's frozen lower half includes).
    pub layers: Range<usize>,
    /// Weight of the retain descent term; `None` for GA.
    pub retain_weight: Option<f32>,
    pub lr: f32,
    pub steps: usize,
    pub batch_size: usize,
}

impl GdSettings {
    /// The tensors trained.
    pub fn trainable(&self, model: &Llama) -> Result<TrainableSet> {
        let cfg = model.config();
        let mut set = TrainableSet::default()
            .select_weights(cfg, self.layers.clone(), &[""])
            .map_err(|e| Error::usage("--layers", e.to_string()))?
            .weight("model.norm.weight");
        if !cfg.tie_word_embeddings {
            set = set.weight("lm_head.weight");
        }
        Ok(set)
    }

    /// `torch.optim.Adam(lr)` as the study's GA/GD use (no weight decay; AdamW with zero
    /// decay is the same update).
    pub fn optimizer(&self) -> AdamConfig {
        AdamConfig::adam(self.lr)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "layers": [self.layers.start, self.layers.end],
            "retain_weight": self.retain_weight,
            "lr": self.lr,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "optimizer": {"kind": "adam", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
            "loss": "mean next-token cross-entropy over real tokens (no padding)",
        })
    }
}

/// Runs `steps` GA/GD steps on `model` in place. `retain` must be non-empty for GD.
/// `progress` is called after each step with its record.
pub fn gradient_difference(
    model: &mut Llama,
    forget: &[TokenCorpus],
    retain: &[TokenCorpus],
    s: &GdSettings,
    mut progress: impl FnMut(&Value),
) -> Result<Outcome> {
    if forget.is_empty() {
        return Err(Error::usage(
            "--forget",
            "at least one forget file is needed",
        ));
    }
    if s.retain_weight.is_some() && retain.is_empty() {
        return Err(Error::usage(
            "--retain",
            "gd needs at least one retain file",
        ));
    }
    super::check_schedule(s.steps, s.batch_size, s.lr)?;
    let set = s.trainable(model)?;
    let mut trainer = Trainer::new(model, set)?;
    let mut opt = Adam::new(s.optimizer());
    let mut curve = Vec::with_capacity(s.steps);
    for t in 0..s.steps {
        let sb = step_batches(t, forget.len(), retain.len());
        trainer.zero_grad();
        let fb = forget[sb.forget].batch(sb.batch, s.batch_size);
        let ascent = Objective::gradient_ascent(Target::next_token_mean(fb));
        let forget_nll = -trainer.forward_backward(fb, &ascent)?;
        let mut rec = json!({
            "step": t,
            "forget_file": sb.forget,
            "batch": sb.batch,
            "forget_nll": forget_nll,
        });
        let mut loss = -forget_nll;
        if let Some(w) = s.retain_weight {
            let rb = retain[sb.retain].batch(sb.batch, s.batch_size);
            let ce = LossTerm::CrossEntropy(Target::next_token_mean(rb));
            // A zero weight adds no gradient; the retain NLL is still reported.
            let retain_nll = if w == 0.0 {
                trainer.loss(rb, &Objective::single(ce))?
            } else {
                let descent = Objective {
                    terms: vec![(w, ce)],
                };
                trainer.forward_backward(rb, &descent)? / f64::from(w)
            };
            loss += f64::from(w) * retain_nll;
            rec["retain_file"] = json!(sb.retain);
            rec["retain_nll"] = json!(retain_nll);
        }
        rec["loss"] = json!(loss);
        check_finite(loss, t)?;
        trainer.step(&mut opt)?;
        progress(&rec);
        curve.push(rec);
    }
    let changed = trainer.trainable().weights.clone();
    Ok(Outcome { changed, curve })
}
