//! AWQ on one decoder layer (llm-awq `run_awq`, algorithms.md §5): activation statistics from
//! the FP layer, the scale search per scaling group, folding the scales into the previous op,
//! the clip search, and AWQ-grid quantisation. The calibration activations leave as the FP
//! layer's outputs: the next layer is calibrated on the original model, as the reference does.
//!
//! Scaling groups for a Llama block: input_layernorm -> q/k/v (loss: self-attention output),
//! v_proj -> o_proj only when their shapes agree (the reference skips it under GQA), the
//! post-attention norm -> gate/up (loss: MLP output), up_proj -> down_proj (loss: down output).
//! All searches run on the FP weights; the scales are applied afterwards, as in the reference.
//!
//! Budget: the losses are evaluated on the first `search_samples` windows cut to
//! `search_seqlen` tokens (the reference's blocks are 512 tokens); the mean |x| statistics
//! use every calibration token.

use std::collections::{BTreeMap, BTreeSet};

use super::awq_search::{apply_clip, search_clip, search_scales, AwqConfig};
use super::pipeline::{capture_hooks, weight_name, Activations};
use super::plan::{AwqParams, CompressPlan};
use super::rtn::rtn;
use crate::backend::cpu::matmul::linear;
use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::model::names::Proj;
use crate::model::{DecoderLayer, LayerContext};

/// Mean squared difference, in f64 (the reference computes the loss in f32 to avoid fp16
/// overflow; f64 is stricter).
fn mse(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    s / a.len().max(1) as f64
}

/// `x [rows, in] · Wᵀ`.
fn apply_linear(x: &[f32], w: &Tensor) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols());
    let m = x.len() / k;
    let mut y = vec![0f32; m * n];
    linear(x, w.data(), None, &mut y, m, k, n, false);
    y
}

fn scale_cols(w: &Tensor, s: &[f32]) -> Tensor {
    let mut d = w.data().to_vec();
    for row in d.chunks_mut(w.cols()) {
        for (v, &f) in row.iter_mut().zip(s) {
            *v *= f;
        }
    }
    Tensor::new(w.shape().to_vec(), d).expect("same shape")
}

fn div_rows(w: &Tensor, s: &[f32]) -> Tensor {
    let mut d = w.data().to_vec();
    for (row, &f) in d.chunks_mut(w.cols()).zip(s) {
        for v in row {
            *v /= f;
        }
    }
    Tensor::new(w.shape().to_vec(), d).expect("same shape")
}

fn div_cols_inplace(x: &mut [f32], s: &[f32]) {
    for row in x.chunks_mut(s.len()) {
        for (v, &f) in row.iter_mut().zip(s) {
            *v /= f;
        }
    }
}

/// One scaling group: the previous op, the scaled linears, and the tap they read.
struct Group {
    linears: &'static [Proj],
    tap: Proj,
}

const GROUPS: [Group; 4] = [
    Group {
        linears: &[Proj::Q, Proj::K, Proj::V],
        tap: Proj::Q,
    },
    Group {
        linears: &[Proj::O],
        tap: Proj::O,
    },
    Group {
        linears: &[Proj::Gate, Proj::Up],
        tap: Proj::Gate,
    },
    Group {
        linears: &[Proj::Down],
        tap: Proj::Down,
    },
];

/// Runs AWQ on `layer` (when `targets` is non-empty) and advances `acts` through the FP layer.
/// Returns the winning α per projection.
pub fn awq_layer(
    ctx: &LayerContext,
    plan: &CompressPlan,
    layer: &mut DecoderLayer,
    acts: &mut Activations,
    targets: &[Proj],
) -> Result<BTreeMap<Proj, Option<f32>>> {
    let c = ctx.config().hidden_size;
    let l = layer.index();
    let taps: BTreeSet<Proj> = GROUPS.iter().map(|g| g.tap).collect();
    let params = plan.awq.unwrap_or_default();
    // The search batch: prefixes of the first windows, taken before the pass overwrites them.
    let (ns, ls) = (
        params.search_samples.min(acts.n_seq).max(1),
        params.search_seqlen.min(acts.seqlen).max(1),
    );
    let mut search_x = Vec::with_capacity(ns * ls * c);
    for s in 0..ns {
        let base = s * acts.seqlen * c;
        search_x.extend_from_slice(&acts.hidden[base..base + ls * c]);
    }
    // FP pass: mean |x| per tap over every token; the outputs feed the next layer.
    let hooks = if targets.is_empty() {
        Default::default()
    } else {
        capture_hooks(l, &taps)
    };
    let mut abs_sum: BTreeMap<Proj, Vec<f64>> = BTreeMap::new();
    let mut tokens = 0usize;
    for (s, b) in acts.chunks() {
        let offsets = acts.offsets(b);
        let caps = layer.forward(ctx, acts.rows_mut(s, b, c), &offsets, &hooks)?;
        for &p in &taps {
            if let Some(x) = caps
                .linear_inputs
                .get(&format!("model.layers.{l}.{}", p.module()))
            {
                let acc = abs_sum.entry(p).or_insert_with(|| vec![0f64; x.cols()]);
                for r in 0..x.rows() {
                    for (a, &v) in acc.iter_mut().zip(x.row(r)) {
                        *a += v.abs() as f64;
                    }
                }
            }
        }
        tokens += b * acts.seqlen;
    }
    let mut alphas = BTreeMap::new();
    if targets.is_empty() {
        return Ok(alphas);
    }
    let x_mean: BTreeMap<Proj, Vec<f32>> = abs_sum
        .into_iter()
        .map(|(p, v)| (p, v.iter().map(|s| (s / tokens as f64) as f32).collect()))
        .collect();

    // Search batch through the FP layer: each tap's inputs.
    let offsets: Vec<usize> = (0..=ns).map(|i| i * ls).collect();
    let mut buf = search_x;
    let mut caps = layer.forward(ctx, &mut buf, &offsets, &capture_hooks(l, &taps))?;
    let mut xin: BTreeMap<Proj, Vec<f32>> = BTreeMap::new();
    for &p in &taps {
        let name = format!("model.layers.{l}.{}", p.module());
        let x = caps
            .linear_inputs
            .remove(&name)
            .ok_or_else(|| Error::Check(format!("{name}: input not captured")))?;
        xin.insert(p, x.into_data());
    }
    let q = plan
        .quant
        .as_ref()
        .ok_or_else(|| Error::usage("awq", "no quantiser settings"))?;
    let cfg = awq_config(q.bits, q.group_size, &params);
    let fp = layer.clone();
    let gqa = fp.weight(Proj::V).shape() != fp.weight(Proj::O).shape();

    // Scale searches, all on the FP weights.
    let mut found: Vec<(usize, Vec<f32>)> = Vec::new();
    for (gi, g) in GROUPS.iter().enumerate() {
        let members: Vec<Proj> = g
            .linears
            .iter()
            .copied()
            .filter(|p| targets.contains(p))
            .collect();
        if members.is_empty() || (g.tap == Proj::O && gqa) {
            continue;
        }
        let x = &xin[&g.tap];
        let names: Vec<String> = members.iter().map(|&p| weight_name(l, p)).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let weights: Vec<Tensor> = members.iter().map(|&p| fp.weight(p)).collect();
        let wrefs: Vec<&Tensor> = weights.iter().collect();
        let module_out = |m: &DecoderLayer| -> Result<Vec<f32>> {
            Ok(match g.tap {
                Proj::Q => m.attention_from_normed(ctx, x, &offsets)?,
                Proj::Gate => m.mlp_from_normed(x),
                p => apply_linear(x, &m.weight(p)),
            })
        };
        let target = module_out(&fp)?;
        let mut trial = fp.clone();
        let res = search_scales(&name_refs, &wrefs, &x_mean[&g.tap], &cfg, |cand| {
            for (&p, w) in members.iter().zip(cand) {
                trial.set_weight(p, w)?;
            }
            Ok(mse(&module_out(&trial)?, &target))
        })?;
        for &p in &members {
            alphas.insert(p, Some(res.best_alpha));
        }
        found.push((gi, res.scales));
    }

    // Fold the scales in: previous op / s, the group's input columns · s (FP-equivalent), and
    // the cached inputs / s for the clip search.
    for (gi, s) in &found {
        let g = &GROUPS[*gi];
        for &p in g.linears {
            let w = layer.weight(p);
            layer.set_weight(p, &scale_cols(&w, s))?;
        }
        match g.tap {
            Proj::Q => layer
                .attn_norm_mut()
                .iter_mut()
                .zip(s)
                .for_each(|(v, f)| *v /= f),
            Proj::Gate => layer
                .mlp_norm_mut()
                .iter_mut()
                .zip(s)
                .for_each(|(v, f)| *v /= f),
            Proj::O => {
                let v = layer.weight(Proj::V);
                layer.set_weight(Proj::V, &div_rows(&v, s))?;
            }
            _ => {
                let up = layer.weight(Proj::Up);
                layer.set_weight(Proj::Up, &div_rows(&up, s))?;
            }
        }
        if let Some(x) = xin.get_mut(&g.tap) {
            div_cols_inplace(x, s);
        }
    }

    // Clip (every linear but q/k, "due to qk bmm") then quantise.
    for &p in targets {
        let name = weight_name(l, p);
        let mut w = layer.weight(p);
        if !matches!(p, Proj::Q | Proj::K) {
            let x = &xin[&super::pipeline::tap_of(p)];
            let xt =
                Tensor::new(vec![x.len() / w.cols(), w.cols()], x.clone()).expect("tokens x in");
            let max_val = search_clip(&name, &w, &xt, &cfg)?;
            w = apply_clip(&name, &w, &max_val, q.group_size)?;
        }
        let qw = rtn(&name, &w, q.spec())?;
        layer.set_weight(p, &qw.weight)?;
    }
    Ok(alphas)
}

fn awq_config(bits: u32, group: i64, p: &AwqParams) -> AwqConfig {
    AwqConfig {
        bits,
        group,
        n_grid: p.n_grid,
        max_shrink: p.max_shrink,
        n_sample_token: p.n_sample_token,
    }
}
