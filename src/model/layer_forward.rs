//! Block-wise model access for calibration pipelines (GPTQ, SparseGPT, Wanda, AWQ): the token
//! embedding, one decoder layer's weights loaded on its own from a memory-mapped checkpoint,
//! and that layer's forward on a packed batch of hidden states, through the same kernels as
//! `Llama::forward` (`block::run_block`), so the whole model never has to be in memory.

use crate::backend::cpu::attention::KeySpan;
use crate::backend::cpu::embedding::embed;
use crate::backend::cpu::rope::RopeTable;
use crate::backend::Tensor;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

use super::block::{attn_core, fit, mlp_core, run_block, BlockCtx, KvSlot, Rows, Scratch};
use super::hooks::{Captures, Hooks};
use super::linear::Linear;
use super::names::Proj;
use super::weights::{proj, proj_mut, Layer, Llama};
use super::LlamaConfig;

/// What every layer shares: the config and the rope table (built once, not per layer).
#[derive(Clone, Debug)]
pub struct LayerContext {
    config: LlamaConfig,
    rope: RopeTable,
}

impl LayerContext {
    pub fn new(config: &LlamaConfig) -> Self {
        LayerContext {
            config: config.clone(),
            rope: RopeTable::new(
                config.head_dim,
                config.rope_theta,
                config.rope_scaling.as_ref(),
                config.max_position_embeddings,
            ),
        }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(super) fn rope(&self) -> &RopeTable {
        &self.rope
    }

    fn block_ctx(&self) -> BlockCtx<'_> {
        BlockCtx {
            config: &self.config,
            rope: &self.rope,
        }
    }
}

/// One decoder layer's weights in f32, addressed by projection or Hugging Face name.
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    index: usize,
    layer: Layer,
}

/// Per-row rope positions and key spans of a packed batch (sequence b = rows
/// `offsets[b]..offsets[b+1]`, attending causally within itself).
pub(super) fn packed_rows(offsets: &[usize]) -> (Vec<usize>, Vec<KeySpan>) {
    let n = offsets.last().copied().unwrap_or(0);
    let mut pos = Vec::with_capacity(n);
    let mut spans = Vec::with_capacity(n);
    for w in offsets.windows(2) {
        for t in 0..w[1] - w[0] {
            pos.push(t);
            spans.push(KeySpan {
                start: w[0],
                len: t + 1,
            });
        }
    }
    (pos, spans)
}

/// Checks packed-batch offsets (`0 = o_0 < o_1 < ...`) against `hidden` of `[N, C]`.
fn check_packed(hidden_len: usize, c: usize, offsets: &[usize]) -> Result<usize> {
    let ok = offsets.len() >= 2
        && offsets[0] == 0
        && offsets.windows(2).all(|w| w[0] < w[1])
        && offsets.last().is_some_and(|&n| n * c == hidden_len);
    if !ok {
        return Err(Error::usage(
            "hidden",
            format!(
                "packed batch offsets {offsets:?} do not describe {hidden_len} values of width {c} \
                 (need 0 = o_0 < o_1 < ... and o_last * hidden_size = len)"
            ),
        ));
    }
    Ok(offsets[offsets.len() - 1])
}

impl DecoderLayer {
    /// Loads layer `l` from a checkpoint (only that layer's tensors are read and converted).
    pub fn load(ckpt: &Checkpoint, l: usize) -> Result<Self> {
        let cfg = &ckpt.config;
        if l >= cfg.num_hidden_layers {
            return Err(Error::usage(
                "layer",
                format!("{l} out of range ({} layers)", cfg.num_hidden_layers),
            ));
        }
        let mut take = |name: String| ckpt.tensor_f32(&name).map(Tensor::into_data);
        Ok(DecoderLayer {
            index: l,
            layer: Layer::build(cfg, l, &mut take)?,
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(super) fn layer(&self) -> &Layer {
        &self.layer
    }

    /// The linear of projection `p` and its rows inside the stacked buffer.
    fn rows_of(&self, p: Proj) -> (&Linear, std::ops::Range<usize>) {
        let lin = proj(&self.layer, p);
        let (qkv, gu) = (&self.layer.qkv, &self.layer.gate_up);
        let (kv, i) = ((qkv.out - self.layer.o.inp) / 2, gu.out / 2);
        let qd = self.layer.o.inp;
        let r = match p {
            Proj::Q => 0..qd,
            Proj::K => qd..qd + kv,
            Proj::V => qd + kv..qd + 2 * kv,
            Proj::Gate => 0..i,
            Proj::Up => i..2 * i,
            Proj::O | Proj::Down => 0..lin.out,
        };
        (lin, r)
    }

    /// The `[out, in]` weight of projection `p`.
    pub fn weight(&self, p: Proj) -> Tensor {
        let (lin, r) = self.rows_of(p);
        let data = lin.w[r.start * lin.inp..r.end * lin.inp].to_vec();
        Tensor::new(vec![r.len(), lin.inp], data).expect("rows x inp")
    }

    /// Replaces the weight of projection `p` (same shape).
    pub fn set_weight(&mut self, p: Proj, value: &Tensor) -> Result<()> {
        let (lin, r) = self.rows_of(p);
        let (inp, shape) = (lin.inp, vec![r.len(), lin.inp]);
        if value.shape() != shape.as_slice() {
            return Err(Error::tensor(
                "<layer>",
                format!("model.layers.{}.{}.weight", self.index, p.module()),
                format!(
                    "new value has shape {:?}, expected {shape:?}",
                    value.shape()
                ),
            ));
        }
        proj_mut(&mut self.layer, p).w[r.start * inp..r.end * inp].copy_from_slice(value.data());
        Ok(())
    }

    /// The attention (input) RMSNorm weight, `[C]`.
    pub fn attn_norm_mut(&mut self) -> &mut [f32] {
        &mut self.layer.attn_norm
    }

    /// The MLP (post-attention) RMSNorm weight, `[C]`.
    pub fn mlp_norm_mut(&mut self) -> &mut [f32] {
        &mut self.layer.mlp_norm
    }

    /// This layer's value of a Hugging Face tensor name (weights, biases and norms).
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        let rest = name.strip_prefix(&format!("model.layers.{}.", self.index))?;
        let vec1 = |v: &[f32]| Tensor::new(vec![v.len()], v.to_vec());
        match rest {
            "input_layernorm.weight" => return vec1(&self.layer.attn_norm),
            "post_attention_layernorm.weight" => return vec1(&self.layer.mlp_norm),
            _ => {}
        }
        let (module, kind) = rest.rsplit_once('.')?;
        let p = Proj::ALL.into_iter().find(|p| p.module() == module)?;
        match kind {
            "weight" => Some(self.weight(p)),
            "bias" => {
                let (lin, r) = self.rows_of(p);
                vec1(lin.bias.as_ref()?.get(r)?)
            }
            _ => None,
        }
    }

    /// Runs this layer on `hidden` (`[N, C]` packed rows, updated in place to the layer's
    /// output); `offsets` delimit the sequences. Returns what `hooks` asked to capture for
    /// this layer (linear inputs by Hugging Face name, the hidden state).
    pub fn forward(
        &self,
        ctx: &LayerContext,
        hidden: &mut [f32],
        offsets: &[usize],
        hooks: &Hooks,
    ) -> Result<Captures> {
        run_one_layer(
            &ctx.block_ctx(),
            &self.layer,
            self.index,
            hidden,
            offsets,
            hooks,
        )
    }

    /// The self-attention module's output (o_proj output, no residual) for already-normed
    /// rows `xn` (`[N, C]`): what AWQ compares when it searches the q/k/v scales.
    pub fn attention_from_normed(
        &self,
        ctx: &LayerContext,
        xn: &[f32],
        offsets: &[usize],
    ) -> Result<Vec<f32>> {
        let cfg = &ctx.config;
        let n = check_packed(xn.len(), cfg.hidden_size, offsets)?;
        let (pos, spans) = packed_rows(offsets);
        let kvd = cfg.num_key_value_heads * cfg.head_dim;
        let (mut k, mut v) = (vec![0f32; n * kvd], vec![0f32; n * kvd]);
        let mut s = Scratch::default();
        fit(&mut s.xn, xn.len()).copy_from_slice(xn);
        let rows = Rows {
            pos: &pos,
            spans: &spans,
        };
        let kv = KvSlot {
            k: &mut k,
            v: &mut v,
            write_at: 0,
            dest: None,
        };
        let att = attn_core(&ctx.block_ctx(), &self.layer, &rows, kv, &mut s);
        let mut out = vec![0f32; n * cfg.hidden_size];
        self.layer.o.forward(att, &mut out, n, false);
        Ok(out)
    }

    /// The MLP module's output (down_proj output, no residual) for already-normed rows `xn`.
    pub fn mlp_from_normed(&self, xn: &[f32]) -> Vec<f32> {
        let c = self.layer.gate_up.inp;
        let m = xn.len() / c.max(1);
        let mut s = Scratch::default();
        fit(&mut s.xn, xn.len()).copy_from_slice(xn);
        let act = mlp_core(&self.layer, m, &mut s);
        let mut out = vec![0f32; m * c];
        self.layer.down.forward(act, &mut out, m, false);
        out
    }
}

impl Llama {
    /// Token embeddings of a packed batch: `[N, C]` and the sequence offsets.
    pub fn embed<S: AsRef<[u32]>>(&self, batch: &[S]) -> Result<(Tensor, Vec<usize>)> {
        self.check_tokens(batch)?;
        let c = self.config.hidden_size;
        let mut offsets = vec![0];
        for s in batch {
            offsets.push(offsets[offsets.len() - 1] + s.as_ref().len());
        }
        let tokens: Vec<u32> = batch.iter().flat_map(|s| s.as_ref()).copied().collect();
        let mut x = vec![0f32; tokens.len() * c];
        embed(&self.embed, c, &tokens, &mut x);
        let t = Tensor::new(vec![tokens.len(), c], x).expect("rows x hidden");
        Ok((t, offsets))
    }

    /// Runs decoder layer `l` alone on `hidden` (`[N, C]`, updated in place), as
    /// [`DecoderLayer::forward`] does, with this model's weights.
    pub fn layer_forward(
        &self,
        l: usize,
        hidden: &mut Tensor,
        offsets: &[usize],
        hooks: &Hooks,
    ) -> Result<Captures> {
        let layer = self.layers.get(l).ok_or_else(|| {
            Error::usage(
                "layer",
                format!("{l} out of range ({} layers)", self.layers.len()),
            )
        })?;
        let ctx = BlockCtx {
            config: &self.config,
            rope: &self.rope,
        };
        run_one_layer(&ctx, layer, l, hidden.data_mut(), offsets, hooks)
    }
}

/// Runs decoder layer `index` alone on packed rows `hidden` (`[N, C]`, updated in place),
/// with its own fresh key/value buffers: the one body behind [`DecoderLayer::forward`] and
/// [`Llama::layer_forward`].
fn run_one_layer(
    ctx: &BlockCtx,
    layer: &Layer,
    index: usize,
    hidden: &mut [f32],
    offsets: &[usize],
    hooks: &Hooks,
) -> Result<Captures> {
    let cfg = ctx.config;
    let n = check_packed(hidden.len(), cfg.hidden_size, offsets)?;
    let lens: Vec<usize> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
    let plan = hooks.plan(cfg, &lens, offsets)?;
    let (pos, spans) = packed_rows(offsets);
    let kvd = cfg.num_key_value_heads * cfg.head_dim;
    let (mut k, mut v) = (vec![0f32; n * kvd], vec![0f32; n * kvd]);
    let mut caps = Captures::default();
    let rows = Rows {
        pos: &pos,
        spans: &spans,
    };
    let kv = KvSlot {
        k: &mut k,
        v: &mut v,
        write_at: 0,
        dest: None,
    };
    run_block(
        ctx,
        layer,
        index,
        hidden,
        &rows,
        kv,
        &mut Scratch::default(),
        plan.layers.get(index),
        &mut caps,
    );
    Ok(caps)
}

/// Embeds tokens straight from a checkpoint's memory map, one row at a time, so the
/// `[V, C]` table is never converted as a whole.
pub fn embed_from_checkpoint(ckpt: &Checkpoint, tokens: &[u32]) -> Result<Vec<f32>> {
    let name = "model.embed_tokens.weight";
    let (info, bytes) = ckpt.bytes(name)?;
    let (v, c) = (ckpt.config.vocab_size, ckpt.config.hidden_size);
    let row_bytes = c * info.dtype.size();
    let mut out = Vec::with_capacity(tokens.len() * c);
    for &t in tokens {
        if t as usize >= v {
            return Err(Error::usage(
                "tokens",
                format!("token id {t} is outside the vocabulary of {v}"),
            ));
        }
        let row = &bytes[t as usize * row_bytes..(t as usize + 1) * row_bytes];
        out.extend(info.dtype.to_f32(row));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Logits;
    use std::path::Path;

    fn tiny() -> Checkpoint {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf");
        Checkpoint::open(&dir).unwrap()
    }

    #[test]
    fn layer_by_layer_equals_the_full_forward() {
        let ckpt = tiny();
        let model = Llama::load(&ckpt).unwrap();
        let ctx = LayerContext::new(&ckpt.config);
        let batch = vec![vec![3u32, 17, 42, 5, 9], vec![100, 2, 7]];
        let last = ckpt.config.num_hidden_layers - 1;
        let hooks = Hooks {
            stop_after_layer: Some(last),
            ..Default::default()
        };
        let full = model.forward(&batch, Logits::None, &hooks).unwrap();
        let tokens: Vec<u32> = batch.concat();
        let mut h = embed_from_checkpoint(&ckpt, &tokens).unwrap();
        let (mut h2, offsets) = model.embed(&batch).unwrap();
        assert_eq!(h, h2.data());
        for l in 0..=last {
            let layer = DecoderLayer::load(&ckpt, l).unwrap();
            layer
                .forward(&ctx, &mut h, &offsets, &Hooks::default())
                .unwrap();
            model
                .layer_forward(l, &mut h2, &offsets, &Hooks::default())
                .unwrap();
        }
        // Same kernels in the same order: bit-identical.
        assert_eq!(full.hidden.unwrap().data(), h.as_slice());
        assert_eq!(h2.data(), h.as_slice());
    }

    #[test]
    fn module_outputs_add_up_to_the_block() {
        let ckpt = tiny();
        let ctx = LayerContext::new(&ckpt.config);
        let layer = DecoderLayer::load(&ckpt, 0).unwrap();
        let c = ckpt.config.hidden_size;
        let offsets = vec![0, 4, 7];
        let x = embed_from_checkpoint(&ckpt, &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        let names: std::collections::BTreeSet<String> = [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.mlp.up_proj",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let hooks = Hooks {
            capture_linear_inputs: names,
            ..Default::default()
        };
        let mut out = x.clone();
        let caps = layer.forward(&ctx, &mut out, &offsets, &hooks).unwrap();
        let xa = &caps.linear_inputs["model.layers.0.self_attn.q_proj"];
        let xm = &caps.linear_inputs["model.layers.0.mlp.up_proj"];
        let attn = layer
            .attention_from_normed(&ctx, xa.data(), &offsets)
            .unwrap();
        let mlp = layer.mlp_from_normed(xm.data());
        for r in 0..x.len() {
            let want = x[r] + attn[r] + mlp[r];
            assert!(
                (want - out[r]).abs() <= 1e-5 * (1.0 + want.abs()),
                "row {}",
                r / c
            );
        }
        // Weights round-trip through the stacked buffers.
        let mut l2 = layer.clone();
        let k = layer.weight(Proj::K);
        assert_eq!(k.shape(), &[16, 48]);
        l2.set_weight(Proj::K, &Tensor::zeros(vec![16, 48]))
            .unwrap();
        assert!(l2.weight(Proj::K).data().iter().all(|&v| v == 0.0));
        assert_eq!(l2.weight(Proj::V).data(), layer.weight(Proj::V).data());
        assert_eq!(
            layer
                .tensor("model.layers.0.self_attn.k_proj.weight")
                .unwrap()
                .data(),
            k.data()
        );
        assert!(l2
            .set_weight(Proj::K, &Tensor::zeros(vec![16, 47]))
            .is_err());
        assert!(check_packed(10, 5, &[0, 1, 1]).is_err());
    }
}
