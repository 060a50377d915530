//! RMU (Li et al., WMDP, ICML 2024; reference `rmu/unlearn.py`, algorithms.md §11): trains
//! one linear module (`mlp.down_proj` by default, the reference's `param_ids=[6]`) of layers
//! l-2..l so that the hidden states leaving layer l on forget text move to `c * u` (u a fixed
//! random direction per forget corpus, uniform [0,1) then unit-normalised), while on retain
//! text they stay at the frozen model's, weighted by `alpha`:
//!
//! `L = mean((h_l(forget) - c u)^2) + alpha * mean((h_l(retain) - h_l^frozen(retain))^2)`
//!
//! means over every (token, hidden) element, as PyTorch `mse_loss` (`skip_first` leaves the
//! first positions of every document out of both). Every pass stops at layer
//! l. The frozen model never changes, so its layer-l states for the retain batches the run will
//! use are computed once, before the first step, by a forward that stops at l; no second copy
//! of the model is held. Batches are packed without padding (the reference includes its pad
//! positions in both means).

use std::ops::Range;

use serde_json::{json, Value};

use super::corpus::{step_batches, TokenCorpus};
use super::{check_finite, Outcome};
use crate::backend::Tensor;
use crate::data::rng::SplitMix64;
use crate::error::{Error, Result};
use crate::model::names::Proj;
use crate::model::{Hooks, Llama, Logits};
use crate::optim::{Adam, AdamConfig};
use crate::train::{LossTerm, MseTarget, Objective, TrainableSet, Trainer};

/// Settings of an RMU run. `steering_coef` and `alpha` hold one value per forget corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct RmuSettings {
    pub layer: usize,
    pub update_layers: Range<usize>,
    pub module: Proj,
    pub steering_coef: Vec<f32>,
    pub alpha: Vec<f32>,
    pub lr: f32,
    pub steps: usize,
    pub batch_size: usize,
    /// Positions at the start of every document left out of both MSEs (0 as the reference).
    /// SmolLM2's tokenizer adds no BOS, so its first token is the attention sink, whose
    /// hidden state has 5-7x the others' norm (bench/RESULTS.md, issue 8) and dominates both means.
    pub skip_first: usize,
}

impl RmuSettings {
    /// Checks the layers against the model; errors name the flag.
    pub fn validate(&self, model: &Llama, n_forget: usize) -> Result<()> {
        let n = model.config().num_hidden_layers;
        if self.layer >= n {
            return Err(Error::usage(
                "--layer",
                format!(
                    "{} is out of range (the model has {n} layers, 0..{n})",
                    self.layer
                ),
            ));
        }
        let u = &self.update_layers;
        if u.is_empty() || u.end > self.layer + 1 {
            return Err(Error::usage(
                "--update-layers",
                format!(
                    "{}..{} must be a non-empty range of layers at or below --layer {}",
                    u.start, u.end, self.layer
                ),
            ));
        }
        for (flag, v) in [
            ("--steering-coef", &self.steering_coef),
            ("--alpha", &self.alpha),
        ] {
            if v.len() != n_forget || v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(Error::usage(
                    flag,
                    format!(
                        "{} finite non-negative values for {n_forget} forget file(s)",
                        v.len()
                    ),
                ));
            }
        }
        super::check_schedule(self.steps, self.batch_size, self.lr)
    }

    /// The trained tensors: `module` of each update layer.
    pub fn trainable(&self) -> TrainableSet {
        self.update_layers
            .clone()
            .fold(TrainableSet::default(), |set, l| {
                set.weight(&format!("model.layers.{l}.{}.weight", self.module.module()))
            })
    }

    /// transformers' `AdamW(params, lr)`, as the reference: eps 1e-6, no weight decay.
    pub fn optimizer(&self) -> AdamConfig {
        AdamConfig {
            eps: 1e-6,
            weight_decay: 0.0,
            decoupled: true,
            ..AdamConfig::adam(self.lr)
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "layer": self.layer,
            "update_layers": [self.update_layers.start, self.update_layers.end],
            "module": self.module.module(),
            "steering_coef": self.steering_coef,
            "alpha": self.alpha,
            "lr": self.lr,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "skip_first": self.skip_first,
            "optimizer": {"kind": "adamw", "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.0},
        })
    }
}

/// One unit direction per forget corpus: `n` draws of `hidden` values uniform in [0, 1) from
/// one SplitMix64 stream seeded with `seed` (24-bit mantissas, like `torch.rand` in f32), each
/// divided by its L2 norm.
pub fn random_directions(seed: u64, n: usize, hidden: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let u: Vec<f32> = (0..hidden)
                .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
                .collect();
            let norm = u.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt() as f32;
            u.iter().map(|x| x / norm).collect()
        })
        .collect()
}

/// The hidden states leaving layer `layer` for a batch (packed rows), by a forward that stops
/// there.
pub fn hidden_at(model: &Llama, layer: usize, batch: &[Vec<u32>]) -> Result<Vec<f32>> {
    Ok(hidden_and_stream(model, layer, None, batch)?.0)
}

/// [`hidden_at`], and from the same forward the residual stream leaving layer `below` (which
/// must not be above `layer`) when asked for.
fn hidden_and_stream(
    model: &Llama,
    layer: usize,
    below: Option<usize>,
    batch: &[Vec<u32>],
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let hooks = Hooks {
        stop_after_layer: Some(layer),
        capture_hidden: below.into_iter().collect(),
        ..Hooks::default()
    };
    let mut out = model.forward(batch, Logits::None, &hooks)?;
    let stream = below.and_then(|l| out.captures.hidden.remove(&l));
    let hidden = out
        .hidden
        .ok_or_else(|| Error::usage("--layer", "the truncated forward returned no hidden state"))?;
    Ok((hidden.into_data(), stream.map(Tensor::into_data)))
}

/// The median over tokens of the L2 norm of the layer-`layer` hidden state on `batch`: the
/// scale the default steering coefficient is a multiple of (the residual stream's norm grows
/// with model size and depth, so a fixed c does not carry across models).
pub fn median_token_norm(model: &Llama, layer: usize, batch: &[Vec<u32>]) -> Result<f32> {
    let c = model.config().hidden_size;
    let h = hidden_at(model, layer, batch)?;
    let mut norms: Vec<f32> = h
        .chunks_exact(c)
        .map(|r| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt() as f32)
        .collect();
    if norms.is_empty() {
        return Err(Error::usage("--forget", "empty batch"));
    }
    norms.sort_by(f32::total_cmp);
    Ok(norms[norms.len() / 2])
}

/// Runs RMU on `model` in place with the given unit `directions` (one per forget corpus).
pub fn rmu(
    model: &mut Llama,
    forget: &[TokenCorpus],
    retain: &[TokenCorpus],
    directions: &[Vec<f32>],
    s: &RmuSettings,
    mut progress: impl FnMut(&Value),
) -> Result<Outcome> {
    if forget.is_empty() {
        return Err(Error::usage(
            "--forget",
            "at least one forget file is needed",
        ));
    }
    if retain.is_empty() {
        return Err(Error::usage(
            "--retain",
            "rmu needs at least one retain file",
        ));
    }
    s.validate(model, forget.len())?;
    for corpus in forget.iter().chain(retain) {
        if corpus.docs.iter().all(|d| d.len() <= s.skip_first) {
            return Err(Error::usage(
                "--skip-first",
                format!(
                    "{}: no document of {} is longer than {} tokens, so nothing is left to train on",
                    s.skip_first,
                    corpus.path.display(),
                    s.skip_first
                ),
            ));
        }
    }
    let c = model.config().hidden_size;
    if directions.len() != forget.len() || directions.iter().any(|d| d.len() != c) {
        return Err(Error::usage(
            "rmu",
            format!("need {} directions of {c} values", forget.len()),
        ));
    }
    let controls: Vec<Vec<f32>> = directions
        .iter()
        .zip(&s.steering_coef)
        .map(|(u, &k)| u.iter().map(|x| k * x).collect())
        .collect();

    // The frozen model's layer-l states for every retain batch the run visits. The same
    // forward passes the stream entering the lowest trained layer, which the trainer keeps:
    // its first pass over a retain batch then starts there.
    let mut trainer = Trainer::new(model, s.trainable())?;
    let below = trainer.prefix_layer().map(|l| l - 1);
    let mut frozen: std::collections::BTreeMap<(usize, usize), Vec<f32>> = Default::default();
    for t in 0..s.steps {
        let sb = step_batches(t, forget.len(), retain.len());
        let r = &retain[sb.retain];
        let key = (sb.retain, sb.batch % r.n_batches(s.batch_size));
        if let std::collections::btree_map::Entry::Vacant(e) = frozen.entry(key) {
            let batch = r.batch(sb.batch, s.batch_size);
            let (hidden, stream) = hidden_and_stream(trainer.model(), s.layer, below, batch)?;
            e.insert(hidden);
            if let Some(stream) = stream {
                trainer.keep_prefix(batch, stream)?;
            }
        }
    }

    let mut opt = Adam::new(s.optimizer());
    let mut curve = Vec::with_capacity(s.steps);
    for t in 0..s.steps {
        let sb = step_batches(t, forget.len(), retain.len());
        let (k, r) = (sb.forget, &retain[sb.retain]);
        trainer.zero_grad();
        let fb = forget[k].batch(sb.batch, s.batch_size);
        let forget_obj = Objective::single(LossTerm::HiddenMse {
            layer: s.layer,
            target: MseTarget::Broadcast(controls[k].clone()),
            from_pos: s.skip_first,
        });
        let forget_loss = trainer.forward_backward(fb, &forget_obj)?;
        let rb = r.batch(sb.batch, s.batch_size);
        let key = (sb.retain, sb.batch % r.n_batches(s.batch_size));
        let retain_obj = Objective {
            terms: vec![(
                s.alpha[k],
                LossTerm::HiddenMse {
                    layer: s.layer,
                    target: MseTarget::Rows(frozen[&key].clone()),
                    from_pos: s.skip_first,
                },
            )],
        };
        // The weighted term; reported unweighted as well.
        let retain_weighted = if s.alpha[k] == 0.0 {
            0.0
        } else {
            trainer.forward_backward(rb, &retain_obj)?
        };
        let loss = forget_loss + retain_weighted;
        check_finite(loss, t)?;
        trainer.step(&mut opt)?;
        let rec = json!({
            "step": t,
            "forget_file": k,
            "retain_file": sb.retain,
            "batch": sb.batch,
            "forget_loss": forget_loss,
            "retain_loss": if s.alpha[k] == 0.0 { Value::Null } else { json!(retain_weighted / f64::from(s.alpha[k])) },
            "loss": loss,
        });
        progress(&rec);
        curve.push(rec);
    }
    let changed = trainer.trainable().weights.clone();
    Ok(Outcome { changed, curve })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_are_positive_unit_and_seeded() {
        let a = random_directions(7, 2, 48);
        assert_eq!(a.len(), 2);
        for u in &a {
            let n: f64 = u.iter().map(|&x| f64::from(x).powi(2)).sum();
            assert!((n - 1.0).abs() < 1e-5, "{n}");
            assert!(u.iter().all(|&x| x >= 0.0));
        }
        assert_ne!(a[0], a[1]);
        assert_eq!(a, random_directions(7, 2, 48));
        assert_ne!(a, random_directions(8, 2, 48));
    }
}
