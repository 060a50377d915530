//! The layer-sequential calibration walk shared by GPTQ, SparseGPT, Wanda and AWQ
//! (algorithms.md §1), and the per-tensor path of RTN and magnitude.
//!
//! The walk keeps the calibration activations `[samples·seqlen, C]` and one decoder layer in
//! f32. For layer l: load it from the memory-mapped input, collect its linears' input
//! statistics over the windows (a chunk of sequences at a time, so the block's scratch stays
//! small), compress, then run the windows through the layer to get layer l+1's inputs: with the
//! compressed weights for GPTQ, SparseGPT and Wanda, with the original ones for AWQ (whose
//! driver, `awq::awq_layer`, runs that pass itself). `--true-sequential` collects and solves
//! the sub-groups q/k/v, o, gate/up, down in turn, re-running the layer between them.
//!
//! Output order. The checkpoint writer takes tensors in name order, which is lexical
//! (`model.layers.1.`, `model.layers.10.`, …, `model.layers.19.`, `model.layers.2.`), while the
//! walk must go 0, 1, 2, …. The writer pulls (`take`); the walk advances until the asked-for
//! layer is done and keeps layers finished early, as stored bytes, until their turn. For
//! fewer than 100 layers at most 8 finished layers wait at once (layers 2–9 while 10–19 are
//! computed), a bound that does not grow with depth; `peak_buffered_bytes` reports it.

use std::collections::{BTreeMap, BTreeSet};

use super::awq::awq_layer;
use super::device::Device;
#[cfg(feature = "gpu")]
use super::gpu_walk::{solve_on_gpu, DeviceActivations};
use super::plan::{CompressPlan, Method};
use super::report::{measure, DampSummary, TensorReport};
use super::solve::{solve, InputStats, ObjectiveErrors, Solved};
use crate::backend::Tensor;
use crate::checkpoint::{Checkpoint, DType};
use crate::error::{Error, Result};
use crate::model::names::{parse_tensor, Proj, Site};
use crate::model::{embed_from_checkpoint, DecoderLayer, Hooks, LayerContext};

/// The projection whose Hugging Face name stands for a shared input (q/k/v read the attention
/// norm's output, gate/up the MLP norm's).
pub fn tap_of(p: Proj) -> Proj {
    match p {
        Proj::Q | Proj::K | Proj::V => Proj::Q,
        Proj::Gate | Proj::Up => Proj::Gate,
        other => other,
    }
}

/// The sub-groups of `--true-sequential`, in the reference's order.
const SEQUENTIAL_GROUPS: [&[Proj]; 4] = [
    &[Proj::Q, Proj::K, Proj::V],
    &[Proj::O],
    &[Proj::Gate, Proj::Up],
    &[Proj::Down],
];

/// Calibration activations: `n_seq` windows of `seqlen` tokens, packed `[n_seq·seqlen, C]`.
pub struct Activations {
    pub hidden: Vec<f32>,
    pub n_seq: usize,
    pub seqlen: usize,
    pub chunk: usize,
}

impl Activations {
    /// Embeds the windows straight from the checkpoint's memory map.
    pub fn embed(ckpt: &Checkpoint, windows: &[Vec<u32>], chunk: usize) -> Result<Self> {
        let seqlen = windows.first().map_or(0, Vec::len);
        let tokens: Vec<u32> = windows.concat();
        Ok(Activations {
            hidden: embed_from_checkpoint(ckpt, &tokens)?,
            n_seq: windows.len(),
            seqlen,
            chunk: chunk.max(1),
        })
    }

    /// `(first sequence, sequences)` of each chunk.
    pub fn chunks(&self) -> Vec<(usize, usize)> {
        (0..self.n_seq)
            .step_by(self.chunk)
            .map(|s| (s, self.chunk.min(self.n_seq - s)))
            .collect()
    }

    pub fn offsets(&self, b: usize) -> Vec<usize> {
        (0..=b).map(|i| i * self.seqlen).collect()
    }

    /// The packed rows of sequences `s..s + b`.
    pub fn rows_mut(&mut self, s: usize, b: usize, c: usize) -> &mut [f32] {
        let t = self.seqlen;
        &mut self.hidden[s * t * c..(s + b) * t * c]
    }
}

/// Hooks capturing the inputs of `projs` of layer `l`.
pub fn capture_hooks(l: usize, projs: &BTreeSet<Proj>) -> Hooks {
    Hooks {
        capture_linear_inputs: projs
            .iter()
            .map(|p| format!("model.layers.{l}.{}", p.module()))
            .collect(),
        ..Default::default()
    }
}

/// Runs every chunk through `layer` on a copy (the activations are not changed) and adds the
/// inputs of each tap in `stats` to its accumulator. Batches are `[sequences, tokens, in]`
/// so the statistics count sequences, as the references do.
pub fn collect_stats(
    ctx: &LayerContext,
    layer: &DecoderLayer,
    acts: &Activations,
    stats: &mut BTreeMap<Proj, InputStats>,
) -> Result<()> {
    let c = ctx.config().hidden_size;
    let l = layer.index();
    let hooks = capture_hooks(l, &stats.keys().copied().collect());
    let t = acts.seqlen;
    for (s, b) in acts.chunks() {
        let mut buf = acts.hidden[s * t * c..(s + b) * t * c].to_vec();
        let mut caps = layer.forward(ctx, &mut buf, &acts.offsets(b), &hooks)?;
        for (p, st) in stats.iter_mut() {
            let name = format!("model.layers.{l}.{}", p.module());
            let x = caps
                .linear_inputs
                .remove(&name)
                .ok_or_else(|| Error::Check(format!("{name}: input not captured")))?;
            let n = x.cols();
            let x = Tensor::new(vec![b, t, n], x.into_data()).expect("b x t x n");
            st.add(&name, &x)?;
        }
    }
    Ok(())
}

/// Runs every chunk through `layer`, replacing the activations by the layer's outputs.
pub fn forward_all(ctx: &LayerContext, layer: &DecoderLayer, acts: &mut Activations) -> Result<()> {
    let c = ctx.config().hidden_size;
    for (s, b) in acts.chunks() {
        let offsets = acts.offsets(b);
        layer.forward(ctx, acts.rows_mut(s, b, c), &offsets, &Hooks::default())?;
    }
    Ok(())
}

/// The walk over the layers, pulled by the checkpoint writer.
pub struct LayerWalk<'a> {
    ckpt: &'a Checkpoint,
    plan: &'a CompressPlan,
    ctx: LayerContext,
    acts: Option<Activations>,
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    device: Device<'a>,
    /// On the GPU backend: the activations on the device (the host copy is then dropped).
    #[cfg(feature = "gpu")]
    dev_acts: Option<DeviceActivations>,
    next: usize,
    dtype: DType,
    targets: BTreeSet<String>,
    /// Finished tensors (stored bytes) waiting for the writer.
    done: BTreeMap<String, Vec<u8>>,
    buffered_bytes: usize,
    pub peak_buffered_bytes: usize,
    pub reports: Vec<TensorReport>,
}

impl<'a> LayerWalk<'a> {
    /// A walk on `device`. AWQ's searches run on the host whatever the device (`gpu_walk`),
    /// so its activations stay there.
    pub fn new(
        ckpt: &'a Checkpoint,
        plan: &'a CompressPlan,
        #[allow(unused_mut)] mut acts: Option<Activations>,
        dtype: DType,
        device: Device<'a>,
    ) -> Result<Self> {
        let ctx = LayerContext::new(&ckpt.config);
        #[cfg(feature = "gpu")]
        let dev_acts = match (device, acts.as_mut()) {
            (Device::Gpu(gpu), Some(a)) if plan.method != Method::Awq => {
                let d = DeviceActivations::upload(gpu, &ctx, a)?;
                a.hidden = Vec::new();
                Some(d)
            }
            _ => None,
        };
        Ok(LayerWalk {
            ctx,
            targets: plan
                .targets(&ckpt.config)
                .into_iter()
                .map(|t| t.2)
                .collect(),
            ckpt,
            plan,
            acts,
            device,
            #[cfg(feature = "gpu")]
            dev_acts,
            next: 0,
            dtype,
            done: BTreeMap::new(),
            buffered_bytes: 0,
            peak_buffered_bytes: 0,
            reports: Vec::new(),
        })
    }

    /// The layer whose walk step produces tensor `name`, if any (otherwise the input's bytes
    /// are copied): the targets, and for AWQ every tensor of a selected layer (the scales are
    /// folded into the norms and, without GQA, into v_proj and up_proj).
    pub fn producer(&self, name: &str) -> Option<usize> {
        let l = match parse_tensor(name)? {
            Site::AttnNorm(l) | Site::MlpNorm(l) | Site::Weight(l, _) | Site::Bias(l, _) => l,
            _ => return None,
        };
        let selected = (self.plan.layers[0]..self.plan.layers[1]).contains(&l);
        let awq_touched =
            self.plan.method == Method::Awq && !matches!(parse_tensor(name)?, Site::Bias(..));
        (selected && (awq_touched || self.targets.contains(name))).then_some(l)
    }

    /// The stored bytes of a produced tensor, advancing the walk as far as needed.
    pub fn take(&mut self, name: &str, layer: usize) -> Result<Vec<u8>> {
        while self.next <= layer {
            self.advance()?;
        }
        let bytes = self
            .done
            .remove(name)
            .ok_or_else(|| Error::Check(format!("{name}: compressed tensor missing (internal)")))?;
        self.buffered_bytes -= bytes.len();
        Ok(bytes)
    }

    fn advance(&mut self) -> Result<()> {
        let l = self.next;
        self.next += 1;
        if l >= self.plan.layers[1] {
            // Nothing after the last compressed layer is produced by the walk.
            return Ok(());
        }
        let selected = l >= self.plan.layers[0];
        let mut layer = match (&self.acts, selected) {
            (None, false) => return Ok(()),
            _ => DecoderLayer::load(self.ckpt, l)?,
        };
        let targets: Vec<Proj> = Proj::ALL
            .into_iter()
            .filter(|p| selected && self.targets.contains(&weight_name(l, *p)))
            .collect();
        let mut records: BTreeMap<Proj, SolveRecord> = BTreeMap::new();
        if self.plan.method == Method::Awq {
            let acts = self
                .acts
                .as_mut()
                .ok_or_else(|| Error::Check("awq: no activations".into()))?;
            let alphas = awq_layer(&self.ctx, self.plan, &mut layer, acts, &targets)?;
            if selected {
                self.finish_layer(&layer, &targets, &alphas, &records)?;
            }
            return Ok(());
        }
        let groups: Vec<&[Proj]> = if self.plan.true_sequential {
            SEQUENTIAL_GROUPS.to_vec()
        } else {
            vec![&Proj::ALL[..]]
        };
        for group in groups {
            let members: Vec<Proj> = group
                .iter()
                .copied()
                .filter(|p| targets.contains(p))
                .collect();
            if members.is_empty() {
                continue;
            }
            let mut stats: BTreeMap<Proj, InputStats> = BTreeMap::new();
            if let Some(acts) = &self.acts {
                for &p in &members {
                    let n = layer.weight(tap_of(p)).cols();
                    stats
                        .entry(tap_of(p))
                        .or_insert_with(|| InputStats::new(self.plan.method, n));
                }
                self.collect(&layer, acts, &mut stats)?;
            }
            for &p in &members {
                let name = weight_name(l, p);
                let w = layer.weight(p);
                let st = stats.get(&tap_of(p)).unwrap_or(&InputStats::None);
                let solved = self.solve_here(&name, &w, st)?;
                layer.set_weight(p, &solved.weight)?;
                records.insert(
                    p,
                    SolveRecord {
                        damp: solved.damp.as_ref().map(DampSummary::from),
                        g_idx: solved.g_idx,
                        errors: solved.errors,
                    },
                );
            }
        }
        // Later layers are calibrated on the compressed model's activations.
        self.hand_over(&layer)?;
        if selected {
            self.finish_layer(&layer, &targets, &BTreeMap::new(), &records)?;
        }
        Ok(())
    }

    /// Runs the activations through `layer` (as it now is), on the walk's device.
    fn hand_over(&mut self, layer: &DecoderLayer) -> Result<()> {
        #[cfg(feature = "gpu")]
        if let (Device::Gpu(gpu), Some(d)) = (self.device, &self.dev_acts) {
            return d.forward_all(gpu, &self.ctx, &layer.upload(gpu)?);
        }
        match self.acts.as_mut() {
            Some(acts) => forward_all(&self.ctx, layer, acts),
            None => Ok(()),
        }
    }

    /// Input statistics of the current layer's taps, on the walk's device.
    fn collect(
        &self,
        layer: &DecoderLayer,
        acts: &Activations,
        stats: &mut BTreeMap<Proj, InputStats>,
    ) -> Result<()> {
        #[cfg(feature = "gpu")]
        if let (Device::Gpu(gpu), Some(d)) = (self.device, &self.dev_acts) {
            // Uploaded per group: under --true-sequential the earlier groups are solved.
            let dev = layer.upload(gpu)?;
            return d.collect_stats(gpu, &self.ctx, &dev, layer.index(), stats);
        }
        collect_stats(&self.ctx, layer, acts, stats)
    }

    /// One tensor's solve, on the device when its kernels are there (`gpu_walk`).
    fn solve_here(&self, name: &str, w: &Tensor, st: &InputStats) -> Result<Solved> {
        #[cfg(feature = "gpu")]
        if let Device::Gpu(gpu) = self.device {
            if let Some(s) = solve_on_gpu(gpu, self.plan, name, w, st)? {
                return Ok(s);
            }
        }
        solve(self.plan, name, w, st)
    }

    /// Casts the layer's produced tensors to the output dtype, measures the targets on the
    /// stored values, and queues the bytes for the writer.
    fn finish_layer(
        &mut self,
        layer: &DecoderLayer,
        targets: &[Proj],
        alphas: &BTreeMap<Proj, Option<f32>>,
        records: &BTreeMap<Proj, SolveRecord>,
    ) -> Result<()> {
        let l = layer.index();
        let names: Vec<String> = self
            .ckpt
            .names()
            .filter(|n| self.producer(n) == Some(l))
            .map(str::to_string)
            .collect();
        let spec = self.plan.quant.as_ref().map(|q| q.spec());
        for name in names {
            let t = layer
                .tensor(&name)
                .ok_or_else(|| Error::Check(format!("{name}: not in the layer (internal)")))?;
            check_finite_tensor(&name, &t)?;
            let bytes = self.dtype.from_f32(t.data());
            if let Some(&p) = targets.iter().find(|p| name == weight_name(l, **p)) {
                let stored = self.dtype.to_f32(&bytes);
                let rec = records.get(&p);
                let gi = rec.and_then(|r| r.g_idx.as_deref());
                let mut r = measure(&name, t.rows(), t.cols(), &stored, spec.as_ref(), gi);
                r.damp = rec.and_then(|r| r.damp.clone());
                r.errors = rec.and_then(|r| r.errors);
                r.awq_alpha = alphas.get(&p).copied().flatten();
                self.reports.push(r);
            }
            self.buffered_bytes += bytes.len();
            self.done.insert(name, bytes);
        }
        self.peak_buffered_bytes = self.peak_buffered_bytes.max(self.buffered_bytes);
        Ok(())
    }
}

/// What a solve leaves for the tensor's report besides the weight.
struct SolveRecord {
    damp: Option<DampSummary>,
    /// GPTQ with act-order: the group of each input column.
    g_idx: Option<Vec<u32>>,
    errors: Option<ObjectiveErrors>,
}

pub fn weight_name(l: usize, p: Proj) -> String {
    format!("model.layers.{l}.{}.weight", p.module())
}

/// A solver's output must be finite before it is stored (a diverged solve is an error, not
/// a checkpoint).
fn check_finite_tensor(name: &str, t: &Tensor) -> Result<()> {
    super::check_finite(name, t.data())
}
