//! The compression walk's heavy parts on the GPU backend.
//!
//! What runs on the device: the calibration activations `[samples·seqlen, C]` (uploaded once,
//! then carried from layer to layer), every calibration forward through the current layer,
//! the GPTQ/SparseGPT Hessian `(2/N) Σ XᵀX` (`xtx` shader, accumulated over chunks without a
//! readback), Wanda's input sums of squares (`col_stats`), the score-only solvers RTN
//! (`quantize`) and magnitude/Wanda masks (`mask`), which are bit-identical to the CPU's, and
//! the GPTQ and SparseGPT column sweeps with their lazy batch updates (`gptq`/`sparsegpt`
//! shaders; SparseGPT's unstructured threshold is picked on the host from each block's scores).
//!
//! What stays on the host, and why: the f64 Cholesky factor of `H⁻¹` (faer; one `n³/3`
//! factorisation per tensor, f64 for the damping retry to mean what the references' does), and
//! AWQ, whose scale and clip searches run on the host (`awq`); `--device gpu` says so for AWQ
//! instead of pretending otherwise.
//!
//! Precision: the device Hessian is an f32 running mean (the CPU keeps f64 across chunks), so
//! a GPU run is reproducible on its own backend but not bit-equal to a CPU run; its provenance
//! names the adapter.

use std::collections::BTreeMap;

use super::gptq::fasterquant_gpu;
use super::hessian::Hessian;
use super::magnitude::magnitude_scores;
use super::mask::{inclusive_threshold, pruned_per_row, SparsityPattern};
use super::pipeline::Activations;
use super::plan::{CompressPlan, Method};
use super::solve::{gptq_config, gptq_solved, sparsegpt_config, InputStats, Solved};
use super::sparsegpt::fasterprune_gpu;
use super::wanda::wanda_norms;
use super::{check_finite, check_matrix};
use crate::backend::gpu::ops::mask::{apply_mask, MaskRule, Scores};
use crate::backend::gpu::ops::quant::quantize;
use crate::backend::gpu::ops::reduce::col_stats;
use crate::backend::gpu::ops::xtx::xtx_accumulate;
use crate::backend::gpu::{Gpu, GpuTensor};
use crate::backend::Tensor;
use crate::error::Result;
use crate::model::names::Proj;
use crate::model::{GpuLayer, GpuRows, LayerContext};

/// One chunk of calibration sequences on the device.
struct Chunk {
    x: GpuTensor,
    seqs: usize,
}

/// The calibration activations on the device, chunk by chunk (the chunking of the host
/// `Activations`, so both backends see the same batches), with one set of block buffers per
/// distinct chunk size (all chunks are full except perhaps the last).
pub struct DeviceActivations {
    chunks: Vec<Chunk>,
    /// Rows and scratch for a chunk of `seqs` sequences, by `seqs`.
    rows: BTreeMap<usize, GpuRows>,
    /// Copy of a chunk that statistics passes run on (they must not move the activations).
    scratch: BTreeMap<usize, GpuTensor>,
}

impl DeviceActivations {
    pub fn upload(gpu: &Gpu, ctx: &LayerContext, acts: &Activations) -> Result<Self> {
        let c = ctx.config().hidden_size;
        let t = acts.seqlen;
        let mut out = DeviceActivations {
            chunks: Vec::new(),
            rows: BTreeMap::new(),
            scratch: BTreeMap::new(),
        };
        for (s, b) in acts.chunks() {
            let data = &acts.hidden[s * t * c..(s + b) * t * c];
            out.chunks.push(Chunk {
                x: GpuTensor::upload(gpu, &[b * t, c], data)?,
                seqs: b,
            });
            if let std::collections::btree_map::Entry::Vacant(e) = out.rows.entry(b) {
                e.insert(GpuRows::packed(gpu, ctx, &acts.offsets(b))?);
                out.scratch.insert(b, GpuTensor::zeros(gpu, &[b * t, c])?);
            }
        }
        Ok(out)
    }

    /// Runs every chunk through `layer` on a copy and accumulates the inputs of the taps in
    /// `stats` (keyed by `pipeline::tap_of`), replacing each Hessian accumulator by the
    /// device's result and adding every chunk's sums of squares to each norm accumulator.
    pub fn collect_stats(
        &self,
        gpu: &Gpu,
        ctx: &LayerContext,
        layer: &GpuLayer,
        l: usize,
        stats: &mut BTreeMap<Proj, InputStats>,
    ) -> Result<()> {
        let mut hessians: BTreeMap<Proj, GpuTensor> = BTreeMap::new();
        for (&p, st) in stats.iter() {
            if let InputStats::Hessian(h) = st {
                hessians.insert(p, GpuTensor::zeros(gpu, &[h.n(), h.n()])?);
            }
        }
        let mut seen = 0usize;
        for chunk in &self.chunks {
            let b = chunk.seqs;
            let scratch = &self.scratch[&b];
            scratch.copy_from(gpu, &chunk.x)?;
            // GPTQ's running mean over sequences: H <- H·N/(N+b) + (2/(N+b))·XᵀX.
            let total = (seen + b) as f32;
            let (alpha, beta) = (2.0 / total, seen as f32 / total);
            let mut tap = |p: Proj, x: &GpuTensor| -> Result<()> {
                if let Some(h) = hessians.get(&p) {
                    xtx_accumulate(gpu, h, x, alpha, beta)?;
                }
                if let Some(InputStats::Norms(n)) = stats.get_mut(&p) {
                    let sums = col_stats(gpu, x)?.sum_sq.download(gpu)?;
                    let name = format!("model.layers.{l}.{}", p.module());
                    check_finite(&name, &sums)?;
                    n.add_sums(&name, &sums, b)?;
                }
                Ok(())
            };
            layer.forward(gpu, ctx, scratch, &self.rows[&b], &mut tap)?;
            seen += b;
        }
        for (p, h) in hessians {
            let n = h.cols();
            let data: Vec<f64> = h.download(gpu)?.into_iter().map(f64::from).collect();
            let name = format!("model.layers.{l}.{}", p.module());
            stats.insert(
                p,
                InputStats::Hessian(Hessian::from_data(&name, n, data, seen)?),
            );
        }
        Ok(())
    }

    /// Runs every chunk through `layer`, replacing the activations by the layer's outputs.
    pub fn forward_all(&self, gpu: &Gpu, ctx: &LayerContext, layer: &GpuLayer) -> Result<()> {
        for chunk in &self.chunks {
            layer.forward(gpu, ctx, &chunk.x, &self.rows[&chunk.seqs], &mut |_, _| {
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// The solvers on the device: RTN, magnitude and Wanda (bit-identical to their CPU versions)
/// and the GPTQ/SparseGPT column sweeps (`fasterquant_gpu`, `fasterprune_gpu`). `None` for
/// AWQ, whose searches run on the host, or when the statistics are missing.
pub fn solve_on_gpu(
    gpu: &Gpu,
    plan: &CompressPlan,
    name: &str,
    w: &Tensor,
    stats: &InputStats,
) -> Result<Option<Solved>> {
    let weight = match (plan.method, stats) {
        (Method::Rtn, _) => {
            let Some(q) = plan.quant.as_ref() else {
                return Ok(None);
            };
            let spec = q.spec();
            spec.validate()?;
            check_matrix(name, w)?;
            let gw = GpuTensor::from_tensor(gpu, w)?;
            quantize(gpu, &gw, spec)?.weight.to_tensor(gpu)?
        }
        (Method::Magnitude, _) => {
            let (_, cols) = check_matrix(name, w)?;
            let pattern = plan.pattern()?;
            pattern.validate(cols)?;
            let rule = match pattern {
                SparsityPattern::Unstructured(s) => {
                    MaskRule::Threshold(inclusive_threshold(&magnitude_scores(w), s))
                }
                SparsityPattern::NM { n, m } => MaskRule::NM { n, m },
            };
            let gw = GpuTensor::from_tensor(gpu, w)?;
            apply_mask(gpu, &gw, Scores::Magnitude, rule)?
                .weight
                .to_tensor(gpu)?
        }
        (Method::Wanda, InputStats::Norms(n)) => {
            let pattern = plan.pattern()?;
            let (cols, norms) = wanda_norms(name, w, &n.scaler_row(), pattern)?;
            let rule = match pattern {
                SparsityPattern::Unstructured(s) => MaskRule::RowSmallest(pruned_per_row(cols, s)),
                SparsityPattern::NM { n, m } => MaskRule::NM { n, m },
            };
            let gw = GpuTensor::from_tensor(gpu, w)?;
            let gn = GpuTensor::upload(gpu, &[cols], &norms)?;
            apply_mask(gpu, &gw, Scores::Wanda(&gn), rule)?
                .weight
                .to_tensor(gpu)?
        }
        (Method::Gptq, InputStats::Hessian(h)) => {
            let cfg = gptq_config(plan)?;
            let out = fasterquant_gpu(gpu, name, w, h, &cfg)?;
            return gptq_solved(name, w, h, &cfg, out).map(Some);
        }
        (Method::Sparsegpt, InputStats::Hessian(h)) => {
            let out = fasterprune_gpu(gpu, name, w, h, &sparsegpt_config(plan)?)?;
            return Ok(Some(Solved::pruned(out)));
        }
        // AWQ's searches run on the host; missing statistics get the host's error.
        _ => return Ok(None),
    };
    Ok(Some(Solved::weight_only(weight)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::checkpoint::Checkpoint;
    use crate::interventions::compress::pipeline::{collect_stats, forward_all};
    use crate::model::DecoderLayer;

    /// The device's f32 running Hessian and f32 column sums against the host's f64 means:
    /// entries of size ~1 summed over 60 rows per chunk in a different order.
    const STATS_TOL: f64 = 2e-5;
    /// One layer's outputs, device products against the host GEMM.
    const HANDOFF_TOL: f32 = 2e-4;

    fn windows() -> Vec<Vec<u32>> {
        (0..5u32)
            .map(|s| (0..12u32).map(|t| (s * 41 + t * 13 + 7) % 211).collect())
            .collect()
    }

    fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        a.iter()
            .zip(b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs() / scale))
    }

    #[test]
    fn device_statistics_and_handoff_match_the_host() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf");
        let ckpt = Checkpoint::open(&dir).unwrap();
        let ctx = LayerContext::new(&ckpt.config);
        with_gpu("gpu_walk stats", |gpu| {
            // Chunks of 2 sequences over 5: two chunk sizes, uneven running means.
            let mut host = Activations::embed(&ckpt, &windows(), 2).unwrap();
            let dev = DeviceActivations::upload(gpu, &ctx, &host).unwrap();
            for l in 0..ckpt.config.num_hidden_layers {
                let layer = DecoderLayer::load(&ckpt, l).unwrap();
                let gl = layer.upload(gpu).unwrap();
                for method in [Method::Gptq, Method::Wanda] {
                    let fresh = || {
                        let mut m = BTreeMap::new();
                        for p in [Proj::Q, Proj::O, Proj::Gate, Proj::Down] {
                            let n = layer.weight(p).cols();
                            m.insert(p, InputStats::new(method, n));
                        }
                        m
                    };
                    let (mut want, mut got) = (fresh(), fresh());
                    collect_stats(&ctx, &layer, &host, &mut want).unwrap();
                    dev.collect_stats(gpu, &ctx, &gl, l, &mut got).unwrap();
                    for (p, w) in &want {
                        let (a, b): (Vec<f64>, Vec<f64>) = match (&got[p], w) {
                            (InputStats::Hessian(g), InputStats::Hessian(w)) => {
                                assert_eq!(g.nsamples(), w.nsamples());
                                (g.data().to_vec(), w.data().to_vec())
                            }
                            (InputStats::Norms(g), InputStats::Norms(w)) => {
                                assert_eq!(g.nsamples(), w.nsamples());
                                let f = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
                                (f(g.scaler_row()), f(w.scaler_row()))
                            }
                            _ => panic!("{p:?}: statistics of another kind"),
                        };
                        assert!(b.iter().any(|v| *v != 0.0), "layer {l} {p:?}: all zero");
                        let d = max_rel_diff(&a, &b);
                        assert!(d <= STATS_TOL, "layer {l} {p:?} {method:?}: max diff {d:e}");
                    }
                }
                forward_all(&ctx, &layer, &mut host).unwrap();
                dev.forward_all(gpu, &ctx, &gl).unwrap();
                let mut got = Vec::new();
                for c in &dev.chunks {
                    got.extend(c.x.download(gpu).unwrap());
                }
                let scale = host.hidden.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = got
                    .iter()
                    .zip(&host.hidden)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    worst <= HANDOFF_TOL * scale,
                    "layer {l}: hand-over differs by {worst} (scale {scale})"
                );
            }
        });
    }
}
