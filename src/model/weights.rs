//! `Llama`: the model's weights in f32, converted once at load, with q/k/v and gate/up
//! stacked so each runs as one GEMM. Tensors are still addressed by their Hugging Face names
//! (`weight`, `set_weight`, `tensors`), so interventions never see the fused layout.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use crate::backend::cpu::rope::RopeTable;
use crate::backend::Tensor;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

use super::linear::Linear;
use super::names::{parse_tensor, Proj, Site};
use super::LlamaConfig;

/// Named in errors about weights that did not come from a file.
const IN_MEMORY: &str = "<in-memory weights>";

/// One decoder block.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    pub mlp_norm: Vec<f32>,
    /// Rows `[q (H*D) | k (G*D) | v (G*D)]`.
    pub qkv: Linear,
    pub o: Linear,
    /// Rows `[gate (I) | up (I)]`.
    pub gate_up: Linear,
    pub down: Linear,
}

impl Layer {
    /// Builds layer `l` from f32 tensors fetched by Hugging Face name (`take` checks shapes).
    pub(crate) fn build(
        config: &LlamaConfig,
        l: usize,
        take: &mut impl FnMut(String) -> Result<Vec<f32>>,
    ) -> Result<Layer> {
        let (c, i) = (config.hidden_size, config.intermediate_size);
        let (qd, kvd) = (
            config.num_attention_heads * config.head_dim,
            config.num_key_value_heads * config.head_dim,
        );
        let mut lin = |p: Proj, out: usize, inp: usize, bias: bool| -> Result<Linear> {
            let base = format!("model.layers.{l}.{}", p.module());
            Ok(Linear {
                w: take(format!("{base}.weight"))?,
                bias: if bias {
                    Some(take(format!("{base}.bias"))?)
                } else {
                    None
                },
                out,
                inp,
            })
        };
        let qkv = Linear::stack(vec![
            lin(Proj::Q, qd, c, config.qkv_bias)?,
            lin(Proj::K, kvd, c, config.qkv_bias)?,
            lin(Proj::V, kvd, c, config.qkv_bias)?,
        ]);
        let o = lin(Proj::O, c, qd, config.o_bias)?;
        let gate_up = Linear::stack(vec![
            lin(Proj::Gate, i, c, config.mlp_bias)?,
            lin(Proj::Up, i, c, config.mlp_bias)?,
        ]);
        let down = lin(Proj::Down, c, i, config.mlp_bias)?;
        Ok(Layer {
            attn_norm: take(format!("model.layers.{l}.input_layernorm.weight"))?,
            mlp_norm: take(format!("model.layers.{l}.post_attention_layernorm.weight"))?,
            qkv,
            o,
            gate_up,
            down,
        })
    }
}

/// A Llama-family decoder-only model on the CPU backend.
#[derive(Clone, Debug)]
pub struct Llama {
    pub(crate) config: LlamaConfig,
    /// `[V, C]`; also the LM head when the embeddings are tied.
    pub(crate) embed: Vec<f32>,
    /// `[V, C]`, `None` when tied.
    pub(crate) lm_head: Option<Vec<f32>>,
    pub(crate) norm: Vec<f32>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) rope: RopeTable,
}

impl Llama {
    /// Loads every tensor the config names from a checkpoint, converted to f32 once.
    pub fn load(ckpt: &Checkpoint) -> Result<Llama> {
        Self::build(ckpt.config.clone(), ckpt.dir(), |name| {
            ckpt.tensor_f32(name)
        })
    }

    /// Builds a model from in-memory weights with Hugging Face names (extra names, such as
    /// `rotary_emb.inv_freq` or a tied `lm_head.weight`, are ignored).
    pub fn from_tensors(
        config: LlamaConfig,
        mut tensors: BTreeMap<String, Tensor>,
    ) -> Result<Llama> {
        Self::build(config, Path::new(IN_MEMORY), |name| {
            tensors
                .remove(name)
                .ok_or_else(|| Error::tensor(IN_MEMORY, name, "missing"))
        })
    }

    fn build(
        config: LlamaConfig,
        origin: &Path,
        mut get: impl FnMut(&str) -> Result<Tensor>,
    ) -> Result<Llama> {
        let mut want: BTreeMap<String, Vec<usize>> =
            config.expected_tensors().into_iter().collect();
        let mut take = |name: String| -> Result<Vec<f32>> {
            let shape = want.remove(&name).ok_or_else(|| {
                Error::tensor(origin, &name, "not expected by the config (internal)")
            })?;
            let t = get(&name)?;
            if t.shape() != shape.as_slice() {
                return Err(Error::tensor(
                    origin,
                    &name,
                    format!("shape {:?}, the config expects {:?}", t.shape(), shape),
                ));
            }
            Ok(t.into_data())
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            layers.push(Layer::build(&config, l, &mut take)?);
        }
        let embed = take("model.embed_tokens.weight".into())?;
        let norm = take("model.norm.weight".into())?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(take("lm_head.weight".into())?)
        };
        let rope = RopeTable::new(
            config.head_dim,
            config.rope_theta,
            config.rope_scaling.as_ref(),
            config.max_position_embeddings,
        );
        Ok(Llama {
            config,
            embed,
            lm_head,
            norm,
            layers,
            rope,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The `[V, C]` matrix the LM head multiplies by (the embedding when tied).
    pub(crate) fn head_weight(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    /// The buffer, element range and shape a tensor name refers to.
    fn locate(&self, name: &str) -> Result<(Site, Range<usize>, Vec<usize>)> {
        let err = |msg: &str| Error::tensor(IN_MEMORY, name, msg);
        let shape = self
            .config
            .expected_tensors()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s);
        let site = parse_tensor(name).ok_or_else(|| err("not a tensor of this model"))?;
        if site == Site::LmHead && self.config.tie_word_embeddings {
            return Err(err(
                "tied to `model.embed_tokens.weight`; address that instead",
            ));
        }
        let shape = shape.ok_or_else(|| err("not a tensor of this model (config)"))?;
        let numel: usize = shape.iter().product();
        let (qd, kvd, i) = (
            self.config.num_attention_heads * self.config.head_dim,
            self.config.num_key_value_heads * self.config.head_dim,
            self.config.intermediate_size,
        );
        let c = self.config.hidden_size;
        // Row offsets inside the stacked q/k/v and gate/up buffers (bias: 1 element per row).
        let row0 = |p: Proj| match p {
            Proj::K => qd,
            Proj::V => qd + kvd,
            Proj::Up => i,
            _ => 0,
        };
        let range = match site {
            // Stacked buffers are row-major with C columns (q/k/v and gate/up all read C).
            Site::Weight(_, p) => row0(p) * c..row0(p) * c + numel,
            Site::Bias(_, p) => row0(p)..row0(p) + numel,
            _ => 0..numel,
        };
        Ok((site, range, shape))
    }

    fn buffer(&self, site: Site) -> Option<&[f32]> {
        let layer = |l: usize| self.layers.get(l);
        Some(match site {
            Site::Embed => &self.embed,
            Site::LmHead => self.lm_head.as_deref()?,
            Site::FinalNorm => &self.norm,
            Site::AttnNorm(l) => &layer(l)?.attn_norm,
            Site::MlpNorm(l) => &layer(l)?.mlp_norm,
            Site::Weight(l, p) => &proj(layer(l)?, p).w,
            Site::Bias(l, p) => proj(layer(l)?, p).bias.as_deref()?,
        })
    }

    fn buffer_mut(&mut self, site: Site) -> Option<&mut [f32]> {
        let layers = &mut self.layers;
        Some(match site {
            Site::Embed => &mut self.embed,
            Site::LmHead => self.lm_head.as_deref_mut()?,
            Site::FinalNorm => &mut self.norm,
            Site::AttnNorm(l) => &mut layers.get_mut(l)?.attn_norm,
            Site::MlpNorm(l) => &mut layers.get_mut(l)?.mlp_norm,
            Site::Weight(l, p) => &mut proj_mut(layers.get_mut(l)?, p).w,
            Site::Bias(l, p) => proj_mut(layers.get_mut(l)?, p).bias.as_deref_mut()?,
        })
    }

    /// A copy of the tensor with this Hugging Face name.
    pub fn weight(&self, name: &str) -> Result<Tensor> {
        let (site, range, shape) = self.locate(name)?;
        let data = self
            .buffer(site)
            .and_then(|b| b.get(range))
            .ok_or_else(|| Error::tensor(IN_MEMORY, name, "not present in this model"))?;
        Tensor::new(shape, data.to_vec())
            .ok_or_else(|| Error::tensor(IN_MEMORY, name, "internal shape mismatch"))
    }

    /// Replaces the tensor with this Hugging Face name (same shape), e.g. after an edit.
    pub fn set_weight(&mut self, name: &str, value: &Tensor) -> Result<()> {
        let (site, range, shape) = self.locate(name)?;
        if value.shape() != shape.as_slice() {
            return Err(Error::tensor(
                IN_MEMORY,
                name,
                format!(
                    "new value has shape {:?}, expected {:?}",
                    value.shape(),
                    shape
                ),
            ));
        }
        let dst = self
            .buffer_mut(site)
            .and_then(|b| b.get_mut(range))
            .ok_or_else(|| Error::tensor(IN_MEMORY, name, "not present in this model"))?;
        dst.copy_from_slice(value.data());
        Ok(())
    }

    /// Every tensor by Hugging Face name (what a checkpoint writer stores).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        self.config
            .expected_tensors()
            .into_iter()
            .map(|(n, _)| self.weight(&n).map(|t| (n, t)))
            .collect()
    }
}

pub(crate) fn proj(layer: &Layer, p: Proj) -> &Linear {
    match p {
        Proj::Q | Proj::K | Proj::V => &layer.qkv,
        Proj::O => &layer.o,
        Proj::Gate | Proj::Up => &layer.gate_up,
        Proj::Down => &layer.down,
    }
}

pub(crate) fn proj_mut(layer: &mut Layer, p: Proj) -> &mut Linear {
    match p {
        Proj::Q | Proj::K | Proj::V => &mut layer.qkv,
        Proj::O => &mut layer.o,
        Proj::Gate | Proj::Up => &mut layer.gate_up,
        Proj::Down => &mut layer.down,
    }
}
