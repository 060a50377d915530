//! `Trainer`: a forward that keeps what the backward reads, the loss, the backward down to
//! the lowest layer that needs it, and the optimiser step on the trainable set only.
//!
//! Trained layers keep their activations while they fit `activation_budget` bytes (the
//! upper ones first); the layers beyond it are checkpointed at their input and recomputed
//! during the backward. Both paths run the same kernels, so the budget changes memory and
//! time, never the result.

use std::collections::{BTreeMap, HashMap};

use crate::backend::cpu::attention::KeySpan;
use crate::backend::cpu::embedding::embed;
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::optim::{clip_grad_norm, Adam};

use super::block::{block_backward, block_forward, Rows};
use super::embedding::embedding_backward;
use super::head::{head_loss_backward, RowLoss};
use super::loss::mse::mse_rows;
use super::loss::{LossTerm, Objective};
use super::params::{weight_mut, TrainableSet};
use super::rope::Rotary;

const KIND: &str = "training objective";

/// Default bytes of kept activations: SmolLM2's 15 upper layers at batch 4 x 256 need
/// ~0.55 GiB; longer batches or deeper models fall back to recomputing the lower layers.
pub const DEFAULT_ACTIVATION_BUDGET: usize = 1 << 30;

/// What the forward saved of a trained layer for its backward.
enum Saved {
    /// The input only: the layer is recomputed during the backward.
    Input(Vec<f32>),
    /// The input and every activation the backward reads.
    Kept(Vec<f32>, Box<super::block::Acts>),
}

/// Trains a set of tensors of a model. Gradients accumulate over `forward_backward` calls
/// until `zero_grad` (gradient accumulation); `step` applies an optimiser to them.
pub struct Trainer<'m> {
    model: &'m mut Llama,
    set: TrainableSet,
    grads: BTreeMap<String, Vec<f32>>,
    activation_budget: usize,
    prefixes: Prefixes,
}

/// Default bytes of kept frozen-prefix streams: every batch of a SmolLM2 unlearning run
/// (100 batches of 4 x 32 tokens take ~30 MiB); bigger runs keep the batches that fit.
pub const DEFAULT_PREFIX_BUDGET: usize = 256 << 20;

/// The stream entering the lowest trained layer, before any delta, per batch seen. Nothing
/// under that layer trains and the trainer holds the model's only borrow, so a batch seen
/// again gives the same stream: an optimisation over a fixed batch (ROME's and MEMIT's value
/// vector) or over batches it cycles through (RMU, GD past one pass) runs the frozen layers
/// once per batch instead of once per step. Batches past the budget are not kept (the first
/// ones seen are, so which are kept depends on the batch order only).
struct Prefixes {
    streams: HashMap<(Vec<u32>, Vec<usize>), Vec<f32>>,
    bytes: usize,
    budget: usize,
}

impl Prefixes {
    /// Whether a stream of `values` floats still fits the budget.
    fn fits(&self, values: usize) -> bool {
        self.bytes + 4 * values <= self.budget
    }

    fn insert(&mut self, key: (Vec<u32>, Vec<usize>), stream: Vec<f32>) {
        self.bytes += 4 * stream.len();
        self.streams.insert(key, stream);
    }
}

/// A packed batch: sequence b is rows `offsets[b]..offsets[b+1]`.
struct Packed {
    tokens: Vec<u32>,
    offsets: Vec<usize>,
    pos: Vec<usize>,
    spans: Vec<KeySpan>,
}

impl Packed {
    fn row(&self, seq: usize, pos: usize) -> Result<usize> {
        match (self.offsets.get(seq), self.offsets.get(seq + 1)) {
            (Some(&a), Some(&b)) if a + pos < b => Ok(a + pos),
            _ => Err(Error::usage(
                KIND,
                format!("position ({seq}, {pos}) is outside the batch"),
            )),
        }
    }
}

impl<'m> Trainer<'m> {
    /// Checks the set against the model and allocates one gradient buffer per trained tensor.
    pub fn new(model: &'m mut Llama, set: TrainableSet) -> Result<Trainer<'m>> {
        let shapes = set.grad_shapes(&model.config)?;
        for w in &set.weights {
            weight_mut(model, w)?;
        }
        let grads = shapes
            .into_iter()
            .map(|(n, len)| (n, vec![0.0; len]))
            .collect();
        Ok(Trainer {
            model,
            set,
            grads,
            activation_budget: DEFAULT_ACTIVATION_BUDGET,
            prefixes: Prefixes {
                streams: HashMap::new(),
                bytes: 0,
                budget: DEFAULT_PREFIX_BUDGET,
            },
        })
    }

    /// Sets the bytes of activations kept between the forward and the backward (0: every
    /// trained layer is recomputed from its input, the least memory).
    pub fn with_activation_budget(mut self, bytes: usize) -> Self {
        self.activation_budget = bytes;
        self
    }

    /// Sets the bytes of frozen-prefix streams kept between calls (0: none kept).
    pub fn with_prefix_budget(mut self, bytes: usize) -> Self {
        self.prefixes.budget = bytes;
        self
    }

    pub fn model(&self) -> &Llama {
        self.model
    }

    pub fn trainable(&self) -> &TrainableSet {
        &self.set
    }

    /// The accumulated gradient of every trained tensor, by name (weights by their Hugging
    /// Face names, adapters as `<module>.lora_A.weight` / `.lora_B.weight`, deltas by theirs).
    pub fn grads(&self) -> &BTreeMap<String, Vec<f32>> {
        &self.grads
    }

    /// Sets the value of the activation delta `name` (e.g. to restart from a projected one).
    pub fn set_delta(&mut self, name: &str, value: &[f32]) -> Result<()> {
        match self.set.deltas.iter_mut().find(|d| d.name == name) {
            Some(d) if d.vector.len() == value.len() => {
                d.vector.copy_from_slice(value);
                Ok(())
            }
            Some(d) => Err(Error::usage(
                KIND,
                format!(
                    "delta {name} has {} values, got {}",
                    d.vector.len(),
                    value.len()
                ),
            )),
            None => Err(Error::usage(KIND, format!("no delta named {name}"))),
        }
    }

    pub fn zero_grad(&mut self) {
        self.grads.values_mut().for_each(|g| g.fill(0.0));
    }

    fn pack<S: AsRef<[u32]>>(&self, batch: &[S]) -> Result<Packed> {
        self.model.check_tokens(batch)?;
        let mut p = Packed {
            tokens: batch.iter().flat_map(|s| s.as_ref()).copied().collect(),
            offsets: vec![0],
            pos: Vec::new(),
            spans: Vec::new(),
        };
        for s in batch {
            let start = p.offsets[p.offsets.len() - 1];
            for t in 0..s.as_ref().len() {
                p.pos.push(t);
                p.spans.push(KeySpan { start, len: t + 1 });
            }
            p.offsets.push(start + s.as_ref().len());
        }
        Ok(p)
    }

    /// The layer whose input a kept prefix is (the lowest trained layer), where prefixes can be
    /// kept at all: the embedding is not trained and some layer under it is frozen.
    pub fn prefix_layer(&self) -> Option<usize> {
        let (lowest, train_embed) = self.set.lowest_layer(&self.model.config);
        (!train_embed && lowest > 0).then_some(lowest)
    }

    /// Keeps `stream`, the residual stream entering layer [`Self::prefix_layer`] for `batch`
    /// under the frozen layers (no deltas), as if a pass over `batch` had computed it: a
    /// caller that already ran those layers on the batch (RMU's frozen targets) saves the
    /// trainer running them again. The model's forward and the trainer's run the same kernels
    /// in the same order, so the stream is the one the trainer would compute, bit for bit.
    /// Returns whether it was kept (the budget and [`Self::prefix_layer`] allowing).
    pub fn keep_prefix<S: AsRef<[u32]>>(&mut self, batch: &[S], stream: Vec<f32>) -> Result<bool> {
        let p = self.pack(batch)?;
        let c = self.model.config.hidden_size;
        if stream.len() != p.tokens.len() * c {
            return Err(Error::usage(
                KIND,
                format!(
                    "a kept stream of {} values for {} rows of {c}",
                    stream.len(),
                    p.tokens.len()
                ),
            ));
        }
        let key = (p.tokens, p.offsets);
        if self.prefix_layer().is_none()
            || self.prefixes.streams.contains_key(&key)
            || !self.prefixes.fits(stream.len())
        {
            return Ok(false);
        }
        self.prefixes.insert(key, stream);
        Ok(true)
    }

    /// The loss of `objective` on `batch` with the current parameters, adding its gradient
    /// to the accumulated gradients.
    pub fn forward_backward<S: AsRef<[u32]>>(
        &mut self,
        batch: &[S],
        objective: &Objective,
    ) -> Result<f64> {
        let model: &Llama = self.model;
        let cfg = &model.config;
        let (c, v, n_layers) = (cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers);
        let p = self.pack(batch)?;
        let n = p.tokens.len();
        if objective.terms.is_empty() {
            return Err(Error::usage(KIND, "no loss terms"));
        }

        // Resolve the terms to rows before any work, so a bad position fails early.
        let mut head_rows: BTreeMap<usize, RowLoss> = BTreeMap::new();
        let mut mse_at: BTreeMap<usize, Vec<(f32, &super::loss::MseTarget, usize)>> =
            BTreeMap::new();
        for (wt, term) in &objective.terms {
            match term {
                LossTerm::CrossEntropy(targets) => {
                    for t in targets {
                        if t.token as usize >= v {
                            return Err(Error::usage(
                                KIND,
                                format!("target token {} is outside the vocabulary", t.token),
                            ));
                        }
                        let r = p.row(t.seq, t.pos)?;
                        head_rows
                            .entry(r)
                            .or_default()
                            .ce
                            .push((t.token, wt * t.weight));
                    }
                }
                LossTerm::Kl {
                    rows,
                    init_log_probs,
                } => {
                    if init_log_probs.len() != rows.len() * v || rows.is_empty() {
                        return Err(Error::usage(
                            KIND,
                            format!(
                                "KL: {} rows need {} frozen log-probabilities, got {}",
                                rows.len(),
                                rows.len() * v,
                                init_log_probs.len()
                            ),
                        ));
                    }
                    let per_row = wt / rows.len() as f32;
                    for (i, &(s, q)) in rows.iter().enumerate() {
                        let r = p.row(s, q)?;
                        head_rows
                            .entry(r)
                            .or_default()
                            .kl
                            .push((&init_log_probs[i * v..(i + 1) * v], per_row));
                    }
                }
                LossTerm::HiddenMse {
                    layer,
                    target,
                    from_pos,
                } => {
                    if *layer >= n_layers || !target.fits(n, c) {
                        return Err(Error::usage(KIND, format!("MSE at layer {layer}: no such layer, or the target does not fit {n} rows of {c}")));
                    }
                    mse_at
                        .entry(*layer)
                        .or_default()
                        .push((*wt, target, *from_pos));
                }
            }
        }
        for d in &self.set.deltas {
            for &(s, q) in &d.rows {
                p.row(s, q)?;
            }
        }

        let top = if objective.needs_head() {
            n_layers - 1
        } else {
            mse_at.keys().next_back().copied().unwrap_or(0)
        };
        let (lowest, train_embed) = self.set.lowest_layer(cfg);
        // The loop below also visits layers under `lowest` that only collect delta gradients
        // or inject MSE gradients (they run no backward).
        let bottom = self
            .set
            .deltas
            .iter()
            .map(|d| d.layer)
            .chain(mse_at.keys().copied())
            .fold(lowest, usize::min);
        let max_len = p.pos.iter().max().map_or(1, |&m| m + 1);
        let rot = Rotary::new(cfg, max_len);
        let rows = Rows {
            pos: &p.pos,
            spans: &p.spans,
            rot: &rot,
        };
        let adapters = |l: usize| -> Vec<&super::lora::LoraAdapter> {
            self.set.lora.iter().filter(|a| a.layer == l).collect()
        };

        // Forward, keeping the activations of the upper trained layers that fit the budget
        // and the input of the others (recomputed during the backward).
        let per_layer = 4 * super::block::acts_len(cfg, &p.spans);
        let kept_layers = self.activation_budget / per_layer.max(1);
        let keep_from = (top + 1).saturating_sub(kept_layers).max(lowest);
        // The frozen layers under `lowest` (their MSE terms aside, which read them) run once
        // per batch; a delta leaving layer `lowest - 1` is added after the cached stream.
        let cacheable = self.prefix_layer().is_some() && mse_at.keys().all(|&l| l >= lowest);
        let key = cacheable.then(|| (p.tokens.clone(), p.offsets.clone()));
        let cached = key.as_ref().and_then(|k| self.prefixes.streams.get(k));
        let keep = cached.is_none() && key.is_some() && self.prefixes.fits(n * c);
        let (mut x, first) = match cached {
            Some(q) => (q.clone(), lowest),
            None => {
                let mut x = vec![0.0f32; n * c];
                embed(&model.embed, c, &p.tokens, &mut x);
                (x, 0)
            }
        };
        if first > 0 {
            self.add_deltas(first - 1, &p, &mut x);
        }
        let mut saved: Vec<Saved> = Vec::new();
        let mut loss = 0.0f64;
        let mut injected: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut new_prefix = None;
        for l in first..=top {
            if l >= keep_from {
                let x_in = x.clone();
                let acts = block_forward(model, l, &mut x, &rows, &adapters(l), true);
                if let Some(acts) = acts {
                    saved.push(Saved::Kept(x_in, Box::new(acts)));
                }
            } else {
                if l >= lowest {
                    saved.push(Saved::Input(x.clone()));
                }
                block_forward(model, l, &mut x, &rows, &adapters(l), false);
            }
            if keep && l + 1 == lowest {
                new_prefix = Some(x.clone());
            }
            self.add_deltas(l, &p, &mut x);
            if let Some(terms) = mse_at.get(&l) {
                let mut g = vec![0.0f32; n * c];
                for &(wt, target, from_pos) in terms {
                    let keep: Option<Vec<bool>> =
                        (from_pos > 0).then(|| p.pos.iter().map(|&q| q >= from_pos).collect());
                    loss += mse_rows(&x, c, target, wt, &mut g, keep.as_deref());
                }
                injected.insert(l, g);
            }
        }

        if let (Some(x), Some(key)) = (new_prefix, key) {
            self.prefixes.insert(key, x);
        }

        // Backward from the head (or the MSE layers) down.
        let mut dx = vec![0.0f32; n * c];
        if objective.needs_head() {
            loss += head_loss_backward(model, &x, &head_rows, &mut dx, &mut self.grads);
        }
        drop(x);
        for l in (bottom..=top).rev() {
            if let Some(g) = injected.remove(&l) {
                dx.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
            }
            for d in &self.set.deltas {
                if d.layer == l {
                    if let Some(g) = self.grads.get_mut(&d.name) {
                        for &(s, q) in &d.rows {
                            let r = p.row(s, q)?;
                            g.iter_mut()
                                .zip(&dx[r * c..(r + 1) * c])
                                .for_each(|(a, b)| *a += b);
                        }
                    }
                }
            }
            if l < lowest {
                continue;
            }
            let ads = adapters(l);
            let (x_in, acts) = match saved.pop() {
                Some(Saved::Kept(x_in, acts)) => (x_in, Some(*acts)),
                Some(Saved::Input(x_in)) => {
                    let mut xr = x_in.clone();
                    let acts = block_forward(model, l, &mut xr, &rows, &ads, true);
                    (x_in, acts)
                }
                None => break,
            };
            if let Some(acts) = acts {
                block_backward(
                    model,
                    l,
                    &x_in,
                    &acts,
                    &mut dx,
                    &rows,
                    &ads,
                    &mut self.grads,
                    l > lowest || bottom < lowest || train_embed,
                );
            }
        }
        if train_embed && lowest == 0 {
            if let Some(g) = self.grads.get_mut("model.embed_tokens.weight") {
                embedding_backward(&dx, &p.tokens, c, g);
            }
        }
        Ok(loss)
    }

    /// The loss alone (no gradient), e.g. to evaluate after the last step.
    pub fn loss<S: AsRef<[u32]>>(&mut self, batch: &[S], objective: &Objective) -> Result<f64> {
        let saved = self.grads.clone();
        let loss = self.forward_backward(batch, objective);
        self.grads = saved;
        loss
    }

    fn add_deltas(&self, l: usize, p: &Packed, x: &mut [f32]) {
        let c = self.model.config.hidden_size;
        for d in self.set.deltas.iter().filter(|d| d.layer == l) {
            for &(s, q) in &d.rows {
                // Rows were checked against the batch in `forward_backward`.
                if let Ok(r) = p.row(s, q) {
                    x[r * c..(r + 1) * c]
                        .iter_mut()
                        .zip(&d.vector)
                        .for_each(|(a, b)| *a += b);
                }
            }
        }
    }

    /// Scales the accumulated gradients so their global L2 norm is at most `max_norm`
    /// (torch's `clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f32) -> f32 {
        clip_grad_norm(self.grads.values_mut().map(|g| &mut g[..]), max_norm)
    }

    /// One optimiser step on every trained tensor with its accumulated gradient.
    pub fn step(&mut self, opt: &mut Adam) -> Result<()> {
        opt.begin_step();
        for w in &self.set.weights {
            let g = &self.grads[w];
            opt.update(w, weight_mut(self.model, w)?, g)?;
        }
        for ad in &mut self.set.lora {
            let [na, nb] = ad.names();
            opt.update(&na, &mut ad.a, &self.grads[&na])?;
            opt.update(&nb, &mut ad.b, &self.grads[&nb])?;
        }
        for d in &mut self.set.deltas {
            opt.update(&d.name, &mut d.vector, &self.grads[&d.name])?;
        }
        Ok(())
    }

    /// Ends training: merges every LoRA adapter into its weight (`W += (alpha/r) B A`) and
    /// returns the trained set (adapters and deltas with their final values).
    pub fn finish(self) -> Result<TrainableSet> {
        for ad in &self.set.lora {
            let name = format!("{}.weight", ad.module);
            ad.merge_into(weight_mut(self.model, &name)?);
        }
        Ok(self.set)
    }
}
