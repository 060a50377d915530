//! The forward pass on the GPU backend: weights uploaded once, then every op of every block
//! runs as a compute shader on device buffers, and only the requested logits come back (no
//! per-op readbacks). Same packing as the CPU `forward` (sequences of any lengths in one
//! `[N, C]` matrix, each token seeing the earlier tokens of its own sequence). Hooks are not
//! supported here; greedy generation re-runs the prefix (no device KV cache yet).

use crate::backend::cpu::argmax::argmax;
use crate::backend::gpu::ops::embedding::embed;
use crate::backend::gpu::ops::matmul::linear;
use crate::backend::gpu::ops::rmsnorm::rmsnorm;
use crate::backend::gpu::{Gpu, GpuError, GpuTensor};
use crate::backend::Tensor;
use crate::error::{Error, Result};

use super::forward::Logits;
use super::gpu_layer::{run_gpu_block, GpuLayer, GpuRows};
use super::layer_forward::packed_rows;
use super::weights::Llama;

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Self {
        Error::Check(e.to_string())
    }
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
            .map(|l| GpuLayer::upload(gpu, l))
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
        let c = cfg.hidden_size;
        let eps = cfg.rms_norm_eps as f32;

        let mut offsets = vec![0];
        for s in batch {
            offsets.push(offsets[offsets.len() - 1] + s.as_ref().len());
        }
        let (pos, spans) = packed_rows(&offsets);
        let n = pos.len();
        let tokens: Vec<u32> = batch.iter().flat_map(|s| s.as_ref()).copied().collect();

        let x = GpuTensor::zeros(gpu, &[n, c])?;
        embed(gpu, &self.embed, &tokens, &x)?;
        let rows = GpuRows::new(gpu, cfg, &model.rope, &pos, &spans)?;
        for layer in &self.layers {
            run_gpu_block(gpu, cfg, layer, &x, &rows, &mut |_, _| Ok(()))?;
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
