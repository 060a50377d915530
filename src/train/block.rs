//! One decoder block for training: the forward (optionally keeping every activation its
//! backward reads) and the backward, op by op in reverse. The trainer decides which layers
//! keep their activations and which are recomputed from their input.
//!
//! Residual adds: `x_out = x + f(x)` passes the gradient to both branches unchanged; here it
//! is the accumulate of `rmsnorm_backward` (the branch's gradient is added to the stream's).
//!
//! Legend: M = rows, C = hidden, H/G = query/kv heads, D = head dim, I = intermediate,
//! QKV = H*D + 2*G*D.

use std::collections::BTreeMap;

use crate::backend::cpu::attention::{attention, AttnDims, KeySpan};
use crate::backend::cpu::swiglu::swiglu;
use crate::model::names::Proj;
use crate::model::Llama;

use super::attention::{attention_backward, attention_forward};
use super::linear::linear_backward;
use super::lora::LoraAdapter;
use super::params::fused_row0;
use super::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use super::rope::Rotary;
use super::swiglu::swiglu_backward;

/// The rows a block call works on: rope positions and attention spans of the packed batch.
pub(crate) struct Rows<'a> {
    pub pos: &'a [usize],
    pub spans: &'a [KeySpan],
    pub rot: &'a Rotary,
}

/// What the backward of one block reads.
pub(crate) struct Acts {
    xn1: Vec<f32>,
    r1: Vec<f32>,
    /// Rotated q `[M, H*D]` and k `[M, G*D]`, and v `[M, G*D]`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    att: Vec<f32>,
    /// The stream after the attention residual add: the MLP norm's input.
    x_mid: Vec<f32>,
    xn2: Vec<f32>,
    r2: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    /// `x A^T` of each adapter of this layer, in the order given.
    lora_mid: Vec<Vec<f32>>,
}

/// Floats one layer keeps for its backward (`Acts` and the layer's input) on these rows,
/// adapters' small products aside: per row the input, `xn1`, `x_mid`, `xn2` (C each), `q`,
/// `att` (H*D), `k`, `v` (G*D), `gu`, `act` (3I), `r1`, `r2`; plus the probabilities.
pub(crate) fn acts_len(cfg: &crate::model::LlamaConfig, spans: &[KeySpan]) -> usize {
    let m = spans.len();
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let qd = cfg.num_attention_heads * cfg.head_dim;
    let kvd = cfg.num_key_value_heads * cfg.head_dim;
    let probs: usize = spans.iter().map(|s| s.len * cfg.num_attention_heads).sum();
    m * (4 * c + 2 * qd + 2 * kvd + 3 * i + 2) + probs
}

fn dims(model: &Llama) -> AttnDims {
    AttnDims {
        heads: model.config.num_attention_heads,
        kv_heads: model.config.num_key_value_heads,
        head_dim: model.config.head_dim,
    }
}

/// Adds an adapter's output (`[M, out]`) into columns `col0..col0 + out` of `y` (`[M, width]`).
fn add_columns(y: &mut [f32], width: usize, col0: usize, part: &[f32], out: usize) {
    for (yr, pr) in y.chunks_exact_mut(width).zip(part.chunks_exact(out)) {
        for (a, b) in yr[col0..col0 + out].iter_mut().zip(pr) {
            *a += b;
        }
    }
}

/// Columns `col0..col0 + out` of `y` (`[M, width]`) as a contiguous `[M, out]`.
fn columns(y: &[f32], width: usize, col0: usize, out: usize) -> Vec<f32> {
    y.chunks_exact(width)
        .flat_map(|r| r[col0..col0 + out].iter().copied())
        .collect()
}

/// Applies the adapters on projections `projs` reading `input` to the fused output `y`.
// The fused output's layout (width) and the adapters' saved products are distinct inputs.
#[allow(clippy::too_many_arguments)]
fn lora_forward(
    adapters: &[&LoraAdapter],
    projs: &[Proj],
    model: &Llama,
    input: &[f32],
    y: &mut [f32],
    width: usize,
    m: usize,
    mids: &mut [Vec<f32>],
) {
    for (ad, mid) in adapters.iter().zip(mids.iter_mut()) {
        if !projs.contains(&ad.proj) {
            continue;
        }
        let mut part = vec![0.0; m * ad.out];
        *mid = ad.forward(input, m, &mut part);
        add_columns(y, width, fused_row0(&model.config, ad.proj), &part, ad.out);
    }
}

/// Runs block `l` on `x` (`[M, C]`, updated in place); with `keep`, returns the activations.
pub(crate) fn block_forward(
    model: &Llama,
    l: usize,
    x: &mut [f32],
    rows: &Rows,
    adapters: &[&LoraAdapter],
    keep: bool,
) -> Option<Acts> {
    let cfg = &model.config;
    let layer = &model.layers[l];
    let m = rows.pos.len();
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (qd, kvd) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let qkv_w = qd + 2 * kvd;
    let eps = cfg.rms_norm_eps as f32;
    let mut mids = vec![Vec::new(); adapters.len()];

    // Attention: x -> norm -> q/k/v (+ adapters) -> rope -> attention -> o (+ adapter) -> +x.
    let (mut xn1, mut r1) = (vec![0.0; m * c], vec![0.0; m]);
    rmsnorm_forward(x, &layer.attn_norm, eps, &mut xn1, &mut r1);
    let mut qkv = vec![0.0; m * qkv_w];
    layer.qkv.forward(&xn1, &mut qkv, m, false);
    lora_forward(
        adapters,
        &[Proj::Q, Proj::K, Proj::V],
        model,
        &xn1,
        &mut qkv,
        qkv_w,
        m,
        &mut mids,
    );
    let mut q = columns(&qkv, qkv_w, 0, qd);
    let mut k = columns(&qkv, qkv_w, qd, kvd);
    let v = columns(&qkv, qkv_w, qd + kvd, kvd);
    drop(qkv);
    rows.rot.forward(&mut q, rows.pos);
    rows.rot.forward(&mut k, rows.pos);
    let mut att = vec![0.0; m * qd];
    let mut probs = Vec::new();
    if keep {
        attention_forward(&q, &k, &v, rows.spans, dims(model), &mut att, &mut probs);
    } else {
        attention(
            &q,
            &k,
            &v,
            rows.spans,
            dims(model),
            &mut att,
            &mut Vec::new(),
        );
    }
    layer.o.forward(&att, x, m, true);
    lora_forward(adapters, &[Proj::O], model, &att, x, c, m, &mut mids);
    let x_mid = if keep { x.to_vec() } else { Vec::new() };

    // MLP: x -> norm -> gate/up (+ adapters) -> silu(gate) * up -> down (+ adapter) -> +x.
    let (mut xn2, mut r2) = (vec![0.0; m * c], vec![0.0; m]);
    rmsnorm_forward(x, &layer.mlp_norm, eps, &mut xn2, &mut r2);
    let mut gu = vec![0.0; m * 2 * i];
    layer.gate_up.forward(&xn2, &mut gu, m, false);
    lora_forward(
        adapters,
        &[Proj::Gate, Proj::Up],
        model,
        &xn2,
        &mut gu,
        2 * i,
        m,
        &mut mids,
    );
    let mut act = vec![0.0; m * i];
    swiglu(&gu, &mut act, i);
    layer.down.forward(&act, x, m, true);
    lora_forward(adapters, &[Proj::Down], model, &act, x, c, m, &mut mids);

    keep.then_some(Acts {
        xn1,
        r1,
        q,
        k,
        v,
        probs,
        att,
        x_mid,
        xn2,
        r2,
        gu,
        act,
        lora_mid: mids,
    })
}

/// The Hugging Face name of projection `p`'s `kind` ("weight", "bias") in layer `l`.
fn proj_tensor(l: usize, p: Proj, kind: &str) -> String {
    format!("model.layers.{l}.{}.{kind}", p.module())
}

/// Adds the weight and bias gradients of the projections `projs` sharing the fused linear
/// (`dy` `[M, N]`, input `x` `[M, K]`) to those of them in `grads`; computes nothing when
/// none is trained.
///
/// Each projection owns a contiguous run of the fused weight's rows, so its `dW = dy_p^T x`
/// is one product over a column slice of `dy`, accumulated straight into its gradient (no
/// fused `[N, K]` temporary to fill and add back: 14 MB per SmolLM2 layer, and a serial add).
fn weight_grads(
    grads: &mut BTreeMap<String, Vec<f32>>,
    model: &Llama,
    l: usize,
    projs: &[Proj],
    (dy, x): (&[f32], &[f32]),
    (m, k, n): (usize, usize, usize),
) {
    for &p in projs {
        let (inp, out) = super::lora::linear_dims(&model.config, p);
        debug_assert_eq!(inp, k, "weight_grads: {p:?} input width");
        let r0 = fused_row0(&model.config, p);
        if let Some(g) = grads.get_mut(&proj_tensor(l, p, "weight")) {
            // dW_p[out, K] += dy[:, r0..r0+out]^T . x
            super::linear::matmul(g, &dy[r0..], (1, n), x, (k, 1), out, m, k, true);
        }
        if let Some(g) = grads.get_mut(&proj_tensor(l, p, "bias")) {
            for row in dy.chunks_exact(n) {
                for (a, &d) in g.iter_mut().zip(&row[r0..r0 + out]) {
                    *a += d;
                }
            }
        }
    }
}

/// Backward of adapters on `projs` whose fused output gradient is `dy` (`[M, width]`):
/// accumulates their A/B gradients and the shared input's gradient `dx`.
#[allow(clippy::too_many_arguments)]
fn lora_backward(
    grads: &mut BTreeMap<String, Vec<f32>>,
    adapters: &[&LoraAdapter],
    mids: &[Vec<f32>],
    projs: &[Proj],
    model: &Llama,
    (dy, width): (&[f32], usize),
    input: &[f32],
    dx: &mut [f32],
    m: usize,
) {
    for (ad, mid) in adapters.iter().zip(mids) {
        if !projs.contains(&ad.proj) {
            continue;
        }
        let part = columns(dy, width, fused_row0(&model.config, ad.proj), ad.out);
        let [na, nb] = ad.names();
        let mut da = grads.remove(&na).unwrap_or_else(|| vec![0.0; ad.a.len()]);
        let mut db = grads.remove(&nb).unwrap_or_else(|| vec![0.0; ad.b.len()]);
        ad.backward(&part, input, mid, m, dx, &mut da, &mut db);
        grads.insert(na, da);
        grads.insert(nb, db);
    }
}

/// Given `dx` = the gradient at block `l`'s output, accumulates the gradients of the trained
/// tensors of this block into `grads` and leaves in `dx` the gradient at its input.
///
/// With `input_grad` false (nothing below this block trains) the backward stops after the
/// block's last trained tensor and `dx` is left unspecified: as autograd does when nothing
/// below requires a gradient (RMU's lowest layer trains only `down_proj`, the first op here).
// The block's saved state (input, activations, rows, adapters) and the two gradient sinks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_backward(
    model: &Llama,
    l: usize,
    x_in: &[f32],
    a: &Acts,
    dx: &mut [f32],
    rows: &Rows,
    adapters: &[&LoraAdapter],
    grads: &mut BTreeMap<String, Vec<f32>>,
    input_grad: bool,
) {
    let cfg = &model.config;
    let layer = &model.layers[l];
    let m = rows.pos.len();
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (qd, kvd) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let qkv_w = qd + 2 * kvd;
    let norm_name = |s: &str| format!("model.layers.{l}.{s}.weight");
    let trains = |projs: &[Proj], norm: &str| {
        grads.contains_key(&norm_name(norm))
            || projs.iter().any(|&p| {
                grads.contains_key(&proj_tensor(l, p, "weight"))
                    || grads.contains_key(&proj_tensor(l, p, "bias"))
                    || adapters.iter().any(|ad| ad.proj == p)
            })
    };
    // Whether anything under each stage still needs the gradient flowing through it.
    let below_attention =
        input_grad || trains(&[Proj::Q, Proj::K, Proj::V, Proj::O], "input_layernorm");
    let below_down = below_attention || trains(&[Proj::Gate, Proj::Up], "post_attention_layernorm");

    // MLP, in reverse: down, swiglu, gate/up, norm (+ residual).
    let mut d_act = vec![0.0; m * i];
    linear_backward(
        dx,
        &a.act,
        &layer.down.w,
        m,
        i,
        c,
        below_down.then_some(&mut d_act[..]),
        None,
        None,
    );
    weight_grads(grads, model, l, &[Proj::Down], (dx, &a.act), (m, i, c));
    lora_backward(
        grads,
        adapters,
        &a.lora_mid,
        &[Proj::Down],
        model,
        (dx, c),
        &a.act,
        &mut d_act,
        m,
    );
    if !below_down {
        return;
    }
    let mut d_gu = vec![0.0; m * 2 * i];
    swiglu_backward(&d_act, &a.gu, &mut d_gu, i);
    drop(d_act);
    let mut d_xn2 = vec![0.0; m * c];
    linear_backward(
        &d_gu,
        &a.xn2,
        &layer.gate_up.w,
        m,
        c,
        2 * i,
        Some(&mut d_xn2),
        None,
        None,
    );
    weight_grads(
        grads,
        model,
        l,
        &[Proj::Gate, Proj::Up],
        (&d_gu, &a.xn2),
        (m, c, 2 * i),
    );
    let gu_projs = [Proj::Gate, Proj::Up];
    lora_backward(
        grads,
        adapters,
        &a.lora_mid,
        &gu_projs,
        model,
        (&d_gu, 2 * i),
        &a.xn2,
        &mut d_xn2,
        m,
    );
    drop(d_gu);
    let dw = grads.get_mut(&norm_name("post_attention_layernorm"));
    rmsnorm_backward(
        &d_xn2,
        &a.x_mid,
        &layer.mlp_norm,
        &a.r2,
        dx,
        dw.map(|v| &mut v[..]),
    );
    if !below_attention {
        return;
    }

    // Attention, in reverse: o, attention, rope, q/k/v, norm (+ residual).
    let mut d_att = vec![0.0; m * qd];
    linear_backward(
        dx,
        &a.att,
        &layer.o.w,
        m,
        qd,
        c,
        Some(&mut d_att),
        None,
        None,
    );
    weight_grads(grads, model, l, &[Proj::O], (dx, &a.att), (m, qd, c));
    lora_backward(
        grads,
        adapters,
        &a.lora_mid,
        &[Proj::O],
        model,
        (dx, c),
        &a.att,
        &mut d_att,
        m,
    );
    let (mut dq, mut dk, mut dv) = (vec![0.0; m * qd], vec![0.0; m * kvd], vec![0.0; m * kvd]);
    attention_backward(
        &d_att,
        &a.q,
        &a.k,
        &a.v,
        &a.probs,
        rows.spans,
        dims(model),
        &mut dq,
        &mut dk,
        &mut dv,
    );
    drop(d_att);
    rows.rot.backward(&mut dq, rows.pos);
    rows.rot.backward(&mut dk, rows.pos);
    let mut d_qkv = vec![0.0; m * qkv_w];
    for (r, row) in d_qkv.chunks_exact_mut(qkv_w).enumerate() {
        row[..qd].copy_from_slice(&dq[r * qd..(r + 1) * qd]);
        row[qd..qd + kvd].copy_from_slice(&dk[r * kvd..(r + 1) * kvd]);
        row[qd + kvd..].copy_from_slice(&dv[r * kvd..(r + 1) * kvd]);
    }
    drop((dq, dk, dv));
    // The input norm's gradient, and the block input's, go through d_xn1.
    let need_xn1 = input_grad || grads.contains_key(&norm_name("input_layernorm"));
    let mut d_xn1 = vec![0.0; m * c];
    linear_backward(
        &d_qkv,
        &a.xn1,
        &layer.qkv.w,
        m,
        c,
        qkv_w,
        need_xn1.then_some(&mut d_xn1[..]),
        None,
        None,
    );
    weight_grads(
        grads,
        model,
        l,
        &[Proj::Q, Proj::K, Proj::V],
        (&d_qkv, &a.xn1),
        (m, c, qkv_w),
    );
    let qkv_projs = [Proj::Q, Proj::K, Proj::V];
    lora_backward(
        grads,
        adapters,
        &a.lora_mid,
        &qkv_projs,
        model,
        (&d_qkv, qkv_w),
        &a.xn1,
        &mut d_xn1,
        m,
    );
    if !need_xn1 {
        return;
    }
    let dw = grads.get_mut(&norm_name("input_layernorm"));
    rmsnorm_backward(
        &d_xn1,
        x_in,
        &layer.attn_norm,
        &a.r1,
        dx,
        dw.map(|v| &mut v[..]),
    );
}
