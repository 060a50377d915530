//! One decoder block on the GPU backend: its weights on the device, the scratch a packed batch
//! of rows needs, and the block's forward with taps at the four linear inputs. The whole-model
//! forward (`gpu_forward`) runs it once per layer; the compression walk runs one layer at a
//! time over the calibration chunks and reads the taps to build its statistics on the device.

use crate::backend::cpu::attention::AttnDims;
use crate::backend::cpu::rope::RopeTable;
use crate::backend::gpu::ops::attention::{attention, Cols, Spans};
use crate::backend::gpu::ops::matmul::linear;
use crate::backend::gpu::ops::rmsnorm::rmsnorm;
use crate::backend::gpu::ops::rope::{rope, RopeRows};
use crate::backend::gpu::ops::swiglu::swiglu;
use crate::backend::gpu::{Gpu, GpuTensor};
use crate::error::Result;

use super::layer_forward::{packed_rows, DecoderLayer, LayerContext};
use super::linear::Linear;
use super::names::Proj;
use super::weights::Layer;
use super::LlamaConfig;

pub(super) struct GpuLinear {
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

/// A decoder layer's weights on the device (q/k/v and gate/up stacked, as on the CPU).
pub struct GpuLayer {
    attn_norm: GpuTensor,
    mlp_norm: GpuTensor,
    qkv: GpuLinear,
    o: GpuLinear,
    gate_up: GpuLinear,
    down: GpuLinear,
}

impl GpuLayer {
    pub(super) fn upload(gpu: &Gpu, l: &Layer) -> Result<GpuLayer> {
        let c = l.attn_norm.len();
        Ok(GpuLayer {
            attn_norm: GpuTensor::upload(gpu, &[c], &l.attn_norm)?,
            mlp_norm: GpuTensor::upload(gpu, &[c], &l.mlp_norm)?,
            qkv: GpuLinear::upload(gpu, &l.qkv)?,
            o: GpuLinear::upload(gpu, &l.o)?,
            gate_up: GpuLinear::upload(gpu, &l.gate_up)?,
            down: GpuLinear::upload(gpu, &l.down)?,
        })
    }
}

/// The packing of one batch of rows on the device: rope angles per row and each row's key
/// span, plus the block's intermediate buffers for that many rows (reused layer after layer).
pub struct GpuRows {
    n: usize,
    rope: RopeRows,
    spans: Spans,
    xn: GpuTensor,
    qkv: GpuTensor,
    att: GpuTensor,
    gu: GpuTensor,
    act: GpuTensor,
}

impl GpuRows {
    /// Rows at positions `pos` attending to the key spans `spans` of the same batch.
    pub(super) fn new(
        gpu: &Gpu,
        cfg: &LlamaConfig,
        table: &RopeTable,
        pos: &[usize],
        spans: &[crate::backend::cpu::attention::KeySpan],
    ) -> Result<GpuRows> {
        let n = pos.len();
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let inter = cfg.intermediate_size;
        Ok(GpuRows {
            n,
            rope: RopeRows::new(gpu, table, pos)?,
            spans: Spans::new(gpu, spans, n)?,
            xn: GpuTensor::zeros(gpu, &[n, c])?,
            qkv: GpuTensor::zeros(gpu, &[n, qd + 2 * kvd])?,
            att: GpuTensor::zeros(gpu, &[n, qd])?,
            gu: GpuTensor::zeros(gpu, &[n, 2 * inter])?,
            act: GpuTensor::zeros(gpu, &[n, inter])?,
        })
    }

    /// Sequences packed back to back (`offsets` as `DecoderLayer::forward` takes them).
    pub fn packed(gpu: &Gpu, ctx: &LayerContext, offsets: &[usize]) -> Result<GpuRows> {
        let (pos, spans) = packed_rows(offsets);
        GpuRows::new(gpu, ctx.config(), ctx.rope(), &pos, &spans)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Where a tap reads: the input every linear of `Proj::Q` (q/k/v: the attention norm's output),
/// `Proj::O` (the attention output), `Proj::Gate` (gate/up: the MLP norm's output) and
/// `Proj::Down` (the SwiGLU product) sees, as `[rows, in]` device tensors.
pub type Tap<'t> = dyn FnMut(Proj, &GpuTensor) -> Result<()> + 't;

/// Runs the block on `x` (`[rows.len(), C]`, updated in place to the block's output), calling
/// `tap` with each linear input as soon as it exists. Same steps as the CPU `run_block`.
pub(super) fn run_gpu_block(
    gpu: &Gpu,
    cfg: &LlamaConfig,
    layer: &GpuLayer,
    x: &GpuTensor,
    rows: &GpuRows,
    tap: &mut Tap,
) -> Result<()> {
    let (h, g, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let (qd, kvd) = (h * d, g * d);
    let eps = cfg.rms_norm_eps as f32;
    rmsnorm(gpu, x, &layer.attn_norm, eps, &rows.xn)?;
    tap(Proj::Q, &rows.xn)?;
    layer.qkv.forward(gpu, &rows.xn, &rows.qkv, false)?;
    rope(gpu, &rows.qkv, 0, h, &rows.rope)?;
    rope(gpu, &rows.qkv, qd, g, &rows.rope)?;
    let col = |offset| Cols {
        t: &rows.qkv,
        offset,
    };
    let dims = AttnDims {
        heads: h,
        kv_heads: g,
        head_dim: d,
    };
    attention(
        gpu,
        col(0),
        col(qd),
        col(qd + kvd),
        &rows.spans,
        dims,
        Cols::all(&rows.att),
    )?;
    tap(Proj::O, &rows.att)?;
    // The residual adds are the products' accumulate, as on the CPU.
    layer.o.forward(gpu, &rows.att, x, true)?;
    rmsnorm(gpu, x, &layer.mlp_norm, eps, &rows.xn)?;
    tap(Proj::Gate, &rows.xn)?;
    layer.gate_up.forward(gpu, &rows.xn, &rows.gu, false)?;
    swiglu(gpu, &rows.gu, &rows.act)?;
    tap(Proj::Down, &rows.act)?;
    layer.down.forward(gpu, &rows.act, x, true)
}

impl DecoderLayer {
    /// This layer's weights on the device (upload again after `set_weight`).
    pub fn upload(&self, gpu: &Gpu) -> Result<GpuLayer> {
        GpuLayer::upload(gpu, self.layer())
    }
}

impl GpuLayer {
    /// The layer on the device rows `x` packed as `rows` says, with taps (see [`Tap`]).
    pub fn forward(
        &self,
        gpu: &Gpu,
        ctx: &LayerContext,
        x: &GpuTensor,
        rows: &GpuRows,
        tap: &mut Tap,
    ) -> Result<()> {
        run_gpu_block(gpu, ctx.config(), self, x, rows, tap)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::checkpoint::Checkpoint;
    use crate::model::Hooks;

    /// Summation orders differ between the shader products and the CPU GEMM over one block.
    const BLOCK_TOL: Tolerance = Tolerance {
        abs: 2e-4,
        rel: 2e-4,
    };

    #[test]
    fn the_device_block_and_its_taps_match_the_cpu_layer() {
        let ckpt = Checkpoint::open(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf"),
        )
        .unwrap();
        let ctx = LayerContext::new(&ckpt.config);
        let c = ckpt.config.hidden_size;
        let offsets = [0, 7, 12, 20];
        let n = offsets[3];
        let x0 = Rng::new(5).vec(n * c, 1.0);
        with_gpu("gpu_layer", |gpu| {
            for l in 0..ckpt.config.num_hidden_layers {
                let layer = DecoderLayer::load(&ckpt, l).unwrap();
                let projs: BTreeSet<Proj> = [Proj::Q, Proj::O, Proj::Gate, Proj::Down].into();
                let hooks = Hooks {
                    capture_linear_inputs: projs
                        .iter()
                        .map(|p| format!("model.layers.{l}.{}", p.module()))
                        .collect(),
                    ..Default::default()
                };
                let mut want = x0.clone();
                let caps = layer.forward(&ctx, &mut want, &offsets, &hooks).unwrap();

                let dev = layer.upload(gpu).unwrap();
                let rows = GpuRows::packed(gpu, &ctx, &offsets).unwrap();
                let x = GpuTensor::upload(gpu, &[n, c], &x0).unwrap();
                let mut taps = Vec::new();
                dev.forward(gpu, &ctx, &x, &rows, &mut |p, t| {
                    taps.push((p, t.download(gpu)?));
                    Ok(())
                })
                .unwrap();
                BLOCK_TOL
                    .check(
                        &format!("layer {l} output"),
                        &x.download(gpu).unwrap(),
                        &want,
                    )
                    .unwrap();
                assert_eq!(taps.len(), 4);
                for (p, got) in taps {
                    let name = format!("model.layers.{l}.{}", p.module());
                    let cpu = &caps.linear_inputs[&name];
                    BLOCK_TOL.check(&name, &got, cpu.data()).unwrap();
                }
            }
        });
    }
}
