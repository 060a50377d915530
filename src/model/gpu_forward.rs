//! The forward pass on the GPU backend: weights uploaded once, then every op of every block
//! runs as a compute shader on device buffers, and only the requested logits come back (no
//! per-op readbacks). Same packing as the CPU `forward` (sequences of any lengths in one
//! `[N, C]` matrix, each token seeing the earlier tokens of its own sequence). Hooks are not
//! supported here; greedy generation re-runs the prefix (no device KV cache yet).

use crate::backend::cpu::argmax::argmax;
use crate::backend::cpu::attention::{AttnDims, KeySpan};
use crate::backend::gpu::ops::attention::{attention, Cols, Spans};
use crate::backend::gpu::ops::embedding::embed;
use crate::backend::gpu::ops::matmul::linear;
use crate::backend::gpu::ops::rmsnorm::rmsnorm;
use crate::backend::gpu::ops::rope::{rope, RopeRows};
use crate::backend::gpu::ops::swiglu::swiglu;
use crate::backend::gpu::{Gpu, GpuError, GpuTensor};
use crate::backend::Tensor;
use crate::error::{Error, Result};

use super::forward::Logits;
use super::linear::Linear;
use super::weights::Llama;

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Self {
        Error::Check(e.to_string())
    }
}

struct GpuLinear {
    w: GpuTensor,
    bias: Option<GpuTensor>,
}

impl GpuLinear {
    fn upload(gpu: &Gpu, l: &Linear) -> Result<GpuLinear> {
        Ok(GpuLinear {
            w: GpuTensor::upload(gpu, &[l.out, l.inp], &l.w)?,
            bias: match &l.bias {
                Some(b) => Some(GpuTensor::upload(gpu, &[l.out], b)?),
                None => None,
            },
        })
    }

    fn forward(&self, gpu: &Gpu, x: &GpuTensor, y: &GpuTensor, accumulate: bool) -> Result<()> {
        Ok(linear(gpu, x, &self.w, self.bias.as_ref(), y, accumulate)?)
    }
}

struct GpuLayer {
    attn_norm: GpuTensor,
    mlp_norm: GpuTensor,
    qkv: GpuLinear,
    o: GpuLinear,
    gate_up: GpuLinear,
    down: GpuLinear,
}

/// A model whose weights live on a GPU device.
pub struct GpuLlama<'a> {
    model: &'a Llama,
    gpu: &'a Gpu,
    embed: GpuTensor,
    /// `None` when the LM head is tied to the embedding.
    lm_head: Option<GpuTensor>,
    norm: GpuTensor,
    layers: Vec<GpuLayer>,
}

impl<'a> GpuLlama<'a> {
    /// Uploads every weight of `model` once.
    pub fn upload(gpu: &'a Gpu, model: &'a Llama) -> Result<GpuLlama<'a>> {
        let cfg = &model.config;
        let (v, c) = (cfg.vocab_size, cfg.hidden_size);
        let layers = model
            .layers
            .iter()
            .map(|l| {
                Ok(GpuLayer {
                    attn_norm: GpuTensor::upload(gpu, &[c], &l.attn_norm)?,
                    mlp_norm: GpuTensor::upload(gpu, &[c], &l.mlp_norm)?,
                    qkv: GpuLinear::upload(gpu, &l.qkv)?,
                    o: GpuLinear::upload(gpu, &l.o)?,
                    gate_up: GpuLinear::upload(gpu, &l.gate_up)?,
                    down: GpuLinear::upload(gpu, &l.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuLlama {
            model,
            gpu,
            embed: GpuTensor::upload(gpu, &[v, c], &model.embed)?,
            lm_head: match &model.lm_head {
                Some(h) => Some(GpuTensor::upload(gpu, &[v, c], h)?),
                None => None,
            },
            norm: GpuTensor::upload(gpu, &[c], &model.norm)?,
            layers,
        })
    }

    /// Logits `[R, V]` for the rows `which` selects (as `Llama::forward`), with the
    /// `(sequence, position)` of each row.
    pub fn logits<S: AsRef<[u32]>>(
        &self,
        batch: &[S],
        which: Logits,
    ) -> Result<(Tensor, Vec<(usize, usize)>)> {
        let model = self.model;
        let gpu = self.gpu;
        let cfg = &model.config;
        model.check_tokens(batch)?;
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (h, g) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (qd, kvd, inter) = (h * d, g * d, cfg.intermediate_size);
        let eps = cfg.rms_norm_eps as f32;

        let mut offsets = vec![0];
        let mut pos = Vec::new();
        let mut spans = Vec::new();
        for s in batch {
            let (start, len) = (offsets[offsets.len() - 1], s.as_ref().len());
            pos.extend(0..len);
            spans.extend((0..len).map(|t| KeySpan { start, len: t + 1 }));
            offsets.push(start + len);
        }
        let n = pos.len();
        let tokens: Vec<u32> = batch.iter().flat_map(|s| s.as_ref()).copied().collect();

        let x = GpuTensor::zeros(gpu, &[n, c])?;
        embed(gpu, &self.embed, &tokens, &x)?;
        let xn = GpuTensor::zeros(gpu, &[n, c])?;
        let qkv = GpuTensor::zeros(gpu, &[n, qd + 2 * kvd])?;
        let att = GpuTensor::zeros(gpu, &[n, qd])?;
        let gu = GpuTensor::zeros(gpu, &[n, 2 * inter])?;
        let act = GpuTensor::zeros(gpu, &[n, inter])?;
        let rope_rows = RopeRows::new(gpu, &model.rope, &pos)?;
        let spans = Spans::new(gpu, &spans, n)?;
        let dims = AttnDims {
            heads: h,
            kv_heads: g,
            head_dim: d,
        };
        for layer in &self.layers {
            rmsnorm(gpu, &x, &layer.attn_norm, eps, &xn)?;
            layer.qkv.forward(gpu, &xn, &qkv, false)?;
            rope(gpu, &qkv, 0, h, &rope_rows)?;
            rope(gpu, &qkv, qd, g, &rope_rows)?;
            let q = Cols { t: &qkv, offset: 0 };
            let k = Cols {
                t: &qkv,
                offset: qd,
            };
            let v = Cols {
                t: &qkv,
                offset: qd + kvd,
            };
            attention(gpu, q, k, v, &spans, dims, Cols::all(&att))?;
            // The residual adds are the products' accumulate, as on the CPU.
            layer.o.forward(gpu, &att, &x, true)?;
            rmsnorm(gpu, &x, &layer.mlp_norm, eps, &xn)?;
            layer.gate_up.forward(gpu, &xn, &gu, false)?;
            swiglu(gpu, &gu, &act)?;
            layer.down.forward(gpu, &act, &x, true)?;
        }

        let rows: Vec<(usize, usize)> = match which {
            Logits::All => (0..batch.len())
                .flat_map(|b| (0..batch[b].as_ref().len()).map(move |t| (b, t)))
                .collect(),
            Logits::Last => batch
                .iter()
                .enumerate()
                .map(|(b, s)| (b, s.as_ref().len() - 1))
                .collect(),
            Logits::None => {
                return Err(Error::usage(
                    "logits",
                    "the GPU forward returns logits only",
                ))
            }
        };
        // Gather the wanted rows with the embedding kernel (x is a [N, C] table of rows).
        let ids: Vec<u32> = rows.iter().map(|&(b, t)| (offsets[b] + t) as u32).collect();
        let sel = GpuTensor::zeros(gpu, &[ids.len(), c])?;
        embed(gpu, &x, &ids, &sel)?;
        let seln = GpuTensor::zeros(gpu, &[ids.len(), c])?;
        rmsnorm(gpu, &sel, &self.norm, eps, &seln)?;
        let logits = GpuTensor::zeros(gpu, &[ids.len(), cfg.vocab_size])?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        linear(gpu, &seln, head, None, &logits, false)?;
        Ok((logits.to_tensor(gpu)?, rows))
    }

    /// Greedy decoding as `Llama::generate_greedy` (same tie rule and stop handling), each
    /// step re-running the whole prefix on the device.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>> {
        self.model.check_tokens(&[prompt])?;
        let mut seq = prompt.to_vec();
        let mut out = Vec::with_capacity(max_tokens);
        while out.len() < max_tokens {
            let (logits, _) = self.logits(&[&seq], Logits::Last)?;
            let next = argmax(logits.row(0))
                .ok_or_else(|| Error::Check("generation: every logit is NaN".into()))?
                as u32;
            out.push(next);
            seq.push(next);
            if stop.contains(&next) {
                break;
            }
        }
        Ok(out)
    }

    pub fn gpu(&self) -> &Gpu {
        self.gpu
    }
}
