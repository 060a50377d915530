//! The trainable set: named weight tensors of the model (selected by layer range and module),
//! LoRA adapters on named linears, and activation deltas (a vector added to the hidden state
//! leaving a layer at chosen tokens, as ROME/MEMIT optimise). Nothing outside the set gets a
//! gradient buffer or optimiser state.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::names::{parse_tensor, Proj, Site};
use crate::model::{Llama, LlamaConfig};

use super::lora::{LoraAdapter, LoraConfig};

/// A `[hidden_size]` vector added to the residual stream leaving layer `layer` at the packed
/// `(seq, pos)` tokens. Adding it to the MLP output before the residual add (ROME) is the same
/// function, since that output is added to the stream unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationDelta {
    pub name: String,
    pub layer: usize,
    pub rows: Vec<(usize, usize)>,
    pub vector: Vec<f32>,
}

/// What a `Trainer` optimises.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainableSet {
    /// Hugging Face tensor names (`model.layers.3.mlp.down_proj.weight`).
    pub weights: Vec<String>,
    pub lora: Vec<LoraAdapter>,
    pub deltas: Vec<ActivationDelta>,
}

const KIND: &str = "trainable set";

impl TrainableSet {
    /// Adds every tensor of layers `layers` whose name contains one of `modules` (such as
    /// `mlp.down_proj`, `self_attn`, `layernorm`; an empty string matches the whole layer).
    pub fn select_weights(
        mut self,
        config: &LlamaConfig,
        layers: Range<usize>,
        modules: &[&str],
    ) -> Result<Self> {
        if layers.end > config.num_hidden_layers || layers.is_empty() {
            return Err(Error::usage(
                KIND,
                format!(
                    "layer range {layers:?} is empty or outside the model's {} layers",
                    config.num_hidden_layers
                ),
            ));
        }
        let before = self.weights.len();
        for (name, _) in config.expected_tensors() {
            let in_range = match parse_tensor(&name) {
                Some(
                    Site::AttnNorm(l) | Site::MlpNorm(l) | Site::Weight(l, _) | Site::Bias(l, _),
                ) => layers.contains(&l),
                _ => false,
            };
            if in_range && modules.iter().any(|m| name.contains(m)) && !self.weights.contains(&name)
            {
                self.weights.push(name);
            }
        }
        if self.weights.len() == before {
            return Err(Error::usage(
                KIND,
                format!("no tensor of layers {layers:?} matches {modules:?}"),
            ));
        }
        Ok(self)
    }

    /// Adds a tensor by name (`model.norm.weight`, `lm_head.weight`, ...).
    pub fn weight(mut self, name: &str) -> Self {
        if !self.weights.iter().any(|w| w == name) {
            self.weights.push(name.to_string());
        }
        self
    }

    /// Adds a fresh adapter (PEFT's initialisation) on each named linear module.
    pub fn lora(
        mut self,
        config: &LlamaConfig,
        modules: &[String],
        cfg: &LoraConfig,
    ) -> Result<Self> {
        for m in modules {
            let index = self.lora.len() as u64;
            let ad = LoraAdapter::new(config, m, cfg, index).ok_or_else(|| {
                Error::usage(
                    KIND,
                    format!("`{m}`: not a decoder linear of this model, or rank 0"),
                )
            })?;
            if self.lora.iter().any(|a| a.module == ad.module) {
                return Err(Error::usage(
                    KIND,
                    format!("`{m}`: two adapters on one module"),
                ));
            }
            self.lora.push(ad);
        }
        Ok(self)
    }

    /// Adds an activation delta, zero-initialised.
    pub fn delta(
        mut self,
        config: &LlamaConfig,
        name: &str,
        layer: usize,
        rows: Vec<(usize, usize)>,
    ) -> Self {
        self.deltas.push(ActivationDelta {
            name: name.to_string(),
            layer,
            rows,
            vector: vec![0.0; config.hidden_size],
        });
        self
    }

    /// Every gradient name with its length.
    pub(crate) fn grad_shapes(&self, config: &LlamaConfig) -> Result<Vec<(String, usize)>> {
        let shapes = config.expected_tensors();
        let mut out = Vec::new();
        for w in &self.weights {
            let (_, shape) = shapes.iter().find(|(n, _)| n == w).ok_or_else(|| {
                Error::usage(KIND, format!("`{w}` is not a tensor of this model"))
            })?;
            out.push((w.clone(), shape.iter().product()));
        }
        for ad in &self.lora {
            let [a, b] = ad.names();
            out.push((a, ad.a.len()));
            out.push((b, ad.b.len()));
        }
        for d in &self.deltas {
            if d.layer >= config.num_hidden_layers || d.vector.len() != config.hidden_size {
                return Err(Error::usage(
                    KIND,
                    format!(
                        "delta `{}`: layer {} or width {} does not fit the model",
                        d.name,
                        d.layer,
                        d.vector.len()
                    ),
                ));
            }
            out.push((d.name.clone(), d.vector.len()));
        }
        let mut names: Vec<&String> = out.iter().map(|(n, _)| n).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::usage(KIND, "a trainable name appears twice"));
        }
        Ok(out)
    }

    /// The lowest layer whose backward is needed (`num_hidden_layers` when none), and whether
    /// the embedding table itself is trained.
    pub(crate) fn lowest_layer(&self, config: &LlamaConfig) -> (usize, bool) {
        let top = config.num_hidden_layers;
        let mut lo = top;
        let mut embed = false;
        for w in &self.weights {
            match parse_tensor(w) {
                Some(Site::Embed) => {
                    embed = true;
                    lo = 0;
                }
                Some(
                    Site::AttnNorm(l) | Site::MlpNorm(l) | Site::Weight(l, _) | Site::Bias(l, _),
                ) => lo = lo.min(l),
                _ => {}
            }
        }
        for ad in &self.lora {
            lo = lo.min(ad.layer);
        }
        // A delta leaving layer l needs the backward of the layers above it only.
        for d in &self.deltas {
            lo = lo.min(d.layer + 1);
        }
        (lo, embed)
    }
}

/// Row offset of a projection inside its fused buffer (q/k/v and gate/up are stacked).
pub(crate) fn fused_row0(config: &LlamaConfig, p: Proj) -> usize {
    let (qd, kvd) = (
        config.num_attention_heads * config.head_dim,
        config.num_key_value_heads * config.head_dim,
    );
    match p {
        Proj::K => qd,
        Proj::V => qd + kvd,
        Proj::Up => config.intermediate_size,
        _ => 0,
    }
}

/// The model's storage of a named tensor, mutably (the optimiser updates weights in place,
/// so no copy of the trained tensors is kept).
pub(crate) fn weight_mut<'a>(model: &'a mut Llama, name: &str) -> Result<&'a mut [f32]> {
    let err = |msg: &str| Error::tensor("<in-memory weights>", name, msg);
    let numel: usize = model
        .config
        .expected_tensors()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.iter().product())
        .ok_or_else(|| err("not a tensor of this model"))?;
    let site = parse_tensor(name).ok_or_else(|| err("not a tensor of this model"))?;
    let c = model.config.hidden_size;
    let row0 = |p: Proj| fused_row0(&model.config, p);
    let (buf, start): (&mut Vec<f32>, usize) = match site {
        Site::Embed => (&mut model.embed, 0),
        Site::LmHead => (
            model
                .lm_head
                .as_mut()
                .ok_or_else(|| err("tied to the embedding"))?,
            0,
        ),
        Site::FinalNorm => (&mut model.norm, 0),
        Site::AttnNorm(l) => (&mut model.layers[l].attn_norm, 0),
        Site::MlpNorm(l) => (&mut model.layers[l].mlp_norm, 0),
        Site::Weight(l, p) => {
            let s = row0(p) * c;
            (proj_mut(model, l, p).0, s)
        }
        Site::Bias(l, p) => {
            let s = row0(p);
            (proj_mut(model, l, p).1.ok_or_else(|| err("no bias"))?, s)
        }
    };
    buf.get_mut(start..start + numel)
        .ok_or_else(|| err("internal layout mismatch"))
}

/// A projection's weight buffer and bias (the fused q/k/v and gate/up buffers hold several).
pub(crate) fn proj_mut(
    model: &mut Llama,
    l: usize,
    p: Proj,
) -> (&mut Vec<f32>, Option<&mut Vec<f32>>) {
    let layer = &mut model.layers[l];
    let lin = match p {
        Proj::Q | Proj::K | Proj::V => &mut layer.qkv,
        Proj::O => &mut layer.o,
        Proj::Gate | Proj::Up => &mut layer.gate_up,
        Proj::Down => &mut layer.down,
    };
    (&mut lin.w, lin.bias.as_mut())
}
