//! One decoder block's forward over packed rows, shared by the batched forward (keys are the
//! rows themselves) and the KV-cache decoder (keys are the cache): pre-norm attention with
//! rotary q/k, then the pre-norm SwiGLU MLP, each added to the residual stream.

use crate::backend::cpu::attention::{attention, AttnDims, KeySpan};
use crate::backend::cpu::{rmsnorm::rmsnorm, swiglu::swiglu};
use crate::backend::Tensor;

use super::hooks::{Captures, LayerPlan, Tap};
use super::weights::{Layer, Llama};
use super::LlamaConfig;
use crate::backend::cpu::rope::RopeTable;

/// Reusable work buffers, grown to the largest row count seen and never shrunk, so decoding
/// one token at a time allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) xn: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    att: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    scores: Vec<f32>,
}

pub(crate) fn fit(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// The rows one block call works on.
pub(crate) struct Rows<'a> {
    /// Rope position of each row.
    pub pos: &'a [usize],
    /// The key rows each row attends to, in the `k`/`v` buffers given to `block`.
    pub spans: &'a [KeySpan],
}

/// Key/value storage for one layer: `[S, G*D]` buffers; this call's rows are written at
/// `write_at..write_at + M` and attention reads rows `0..write_at + M`, unless `dest` names
/// each row's key row: then row r goes to `dest[r]` and attention may read the whole buffer
/// (sequences that share a cached prefix each keep a copy of it just before their own rows).
pub(crate) struct KvSlot<'a> {
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    pub write_at: usize,
    pub dest: Option<&'a [usize]>,
}

fn capture(caps: &mut Captures, taps: &[(Tap, &str)], tap: Tap, data: &[f32], m: usize) {
    for (t, name) in taps {
        if *t == tap {
            let cols = data.len() / m.max(1);
            if let Some(t) = Tensor::new(vec![m, cols], data.to_vec()) {
                caps.linear_inputs.insert((*name).to_string(), t);
            }
        }
    }
}

impl Llama {
    /// Runs block `l` on `x` (`[M, C]`, updated in place): [`run_block`] with this model's
    /// config, rope table and layer `l`.
    // The arguments are the block's distinct inputs; bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block(
        &self,
        l: usize,
        x: &mut [f32],
        rows: &Rows,
        kv: KvSlot,
        s: &mut Scratch,
        plan: Option<&LayerPlan>,
        caps: &mut Captures,
    ) {
        run_block(
            &self.block_ctx(),
            &self.layers[l],
            l,
            x,
            rows,
            kv,
            s,
            plan,
            caps,
        );
    }

    pub(crate) fn block_ctx(&self) -> BlockCtx<'_> {
        BlockCtx {
            config: &self.config,
            rope: &self.rope,
        }
    }
}

/// What a block needs besides its own weights: the model's shapes and the rope table.
pub(crate) struct BlockCtx<'a> {
    pub config: &'a LlamaConfig,
    pub rope: &'a RopeTable,
}

/// Runs decoder block `layer` (index `l`, for hooks) on `x` (`[M, C]`, updated in place). The
/// one code path of every forward: the full model, the KV-cache decoder, and the block-wise
/// calibration pipeline (`DecoderLayer::forward`) all come here.
///
/// Legend: M = rows, C = hidden, H/G = query/kv heads, D = head dim, I = intermediate.
// The arguments are the block's distinct inputs; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_block(
    ctx: &BlockCtx,
    layer: &Layer,
    l: usize,
    x: &mut [f32],
    rows: &Rows,
    kv: KvSlot,
    s: &mut Scratch,
    plan: Option<&LayerPlan>,
    caps: &mut Captures,
) {
    let cfg = ctx.config;
    let m = rows.pos.len();
    let c = cfg.hidden_size;
    let eps = cfg.rms_norm_eps as f32;
    let taps: &[(Tap, &str)] = plan.map_or(&[], |p| &p.taps);

    // Attention.
    let xn = fit(&mut s.xn, m * c);
    rmsnorm(x, &layer.attn_norm, eps, xn);
    capture(caps, taps, Tap::Attn, xn, m);
    let att = attn_core(ctx, layer, rows, kv, s);
    capture(caps, taps, Tap::O, att, m);
    // The residual add is the GEMM's accumulate.
    layer.o.forward(att, x, m, true);

    // MLP.
    let xn = fit(&mut s.xn, m * c);
    rmsnorm(x, &layer.mlp_norm, eps, xn);
    capture(caps, taps, Tap::Mlp, xn, m);
    let act = mlp_core(layer, m, s);
    capture(caps, taps, Tap::Down, act, m);
    layer.down.forward(act, x, m, true);

    if let Some(p) = plan {
        // x already holds residual + MLP output, so adding to it adds to the MLP output.
        for &(row, vec) in p.mlp_deltas.iter().chain(&p.residual_deltas) {
            for (a, b) in x[row * c..(row + 1) * c].iter_mut().zip(vec) {
                *a += b;
            }
        }
        if p.capture_hidden {
            if let Some(t) = Tensor::new(vec![m, c], x.to_vec()) {
                caps.hidden.insert(l, t);
            }
        }
    }
}

/// The attention heads' output (`[M, H*D]`, the input of o_proj) for the normed rows in
/// `s.xn`: q/k/v projections, rope, grouped causal attention over `kv`.
pub(crate) fn attn_core<'s>(
    ctx: &BlockCtx,
    layer: &Layer,
    rows: &Rows,
    kv: KvSlot,
    s: &'s mut Scratch,
) -> &'s [f32] {
    let m = rows.pos.len();
    let seen = project_qkv(ctx, layer, rows, kv.k, kv.v, kv.write_at, kv.dest, s);
    let qd = ctx.config.num_attention_heads * ctx.config.head_dim;
    let Scratch { q, att, scores, .. } = s;
    let att = fit(att, m * qd);
    attention(
        &q[..m * qd],
        &kv.k[..seen],
        &kv.v[..seen],
        rows.spans,
        attn_dims(ctx.config),
        att,
        scores,
    );
    att
}

fn attn_dims(cfg: &LlamaConfig) -> AttnDims {
    AttnDims {
        heads: cfg.num_attention_heads,
        kv_heads: cfg.num_key_value_heads,
        head_dim: cfg.head_dim,
    }
}

/// The q/k/v projections of the normed rows in `s.xn` with rope applied: queries to `s.q`,
/// keys and values into the slot's rows. Returns how much of `k`/`v` attention may read.
// The slot's parts are passed apart so that the caller keeps the buffers to attend over.
#[allow(clippy::too_many_arguments)]
fn project_qkv(
    ctx: &BlockCtx,
    layer: &Layer,
    rows: &Rows,
    k: &mut [f32],
    v: &mut [f32],
    write_at: usize,
    dest: Option<&[usize]>,
    s: &mut Scratch,
) -> usize {
    let cfg = ctx.config;
    let m = rows.pos.len();
    let (c, d) = (cfg.hidden_size, cfg.head_dim);
    let (qd, kvd) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
    let Scratch { xn, qkv, q, .. } = s;
    let qkv = fit(qkv, m * (qd + 2 * kvd));
    layer.qkv.forward(&xn[..m * c], qkv, m, false);
    let q = fit(q, m * qd);
    let at = |r: usize| dest.map_or(write_at + r, |d| d[r]);
    for (r, row) in qkv.chunks_exact(qd + 2 * kvd).enumerate() {
        let a = at(r);
        q[r * qd..(r + 1) * qd].copy_from_slice(&row[..qd]);
        k[a * kvd..(a + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
        v[a * kvd..(a + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
    }
    ctx.rope.rotate_rows(q, rows.pos);
    match dest {
        None => {
            ctx.rope
                .rotate_rows(&mut k[write_at * kvd..(write_at + m) * kvd], rows.pos);
            (write_at + m) * kvd
        }
        Some(dest) => {
            for (r, &a) in dest.iter().enumerate() {
                ctx.rope
                    .rotate_rows(&mut k[a * kvd..(a + 1) * kvd], &rows.pos[r..=r]);
            }
            k.len()
        }
    }
}

/// A last block whose output is read at the rows `keep` only (the last position of each
/// sequence, for next-token logits): keys and values come from every row, since the kept
/// rows attend to them, but attention, o_proj and the MLP run for the kept rows alone.
/// Returns their output, `[keep.len(), C]`; `x` itself is left as the block's input.
pub(crate) fn run_block_kept(
    ctx: &BlockCtx,
    layer: &Layer,
    x: &[f32],
    rows: &Rows,
    kv: KvSlot,
    s: &mut Scratch,
    keep: &[usize],
) -> Vec<f32> {
    let cfg = ctx.config;
    let m = rows.pos.len();
    let c = cfg.hidden_size;
    let qd = cfg.num_attention_heads * cfg.head_dim;
    let eps = cfg.rms_norm_eps as f32;
    rmsnorm(x, &layer.attn_norm, eps, fit(&mut s.xn, m * c));
    let seen = project_qkv(ctx, layer, rows, kv.k, kv.v, kv.write_at, kv.dest, s);
    let q: Vec<f32> = keep
        .iter()
        .flat_map(|&r| s.q[r * qd..(r + 1) * qd].iter().copied())
        .collect();
    let spans: Vec<_> = keep.iter().map(|&r| rows.spans[r]).collect();
    let mut att = vec![0.0f32; keep.len() * qd];
    attention(
        &q,
        &kv.k[..seen],
        &kv.v[..seen],
        &spans,
        attn_dims(cfg),
        &mut att,
        &mut s.scores,
    );
    let n = keep.len();
    let mut out: Vec<f32> = keep
        .iter()
        .flat_map(|&r| x[r * c..(r + 1) * c].iter().copied())
        .collect();
    layer.o.forward(&att, &mut out, n, true);
    rmsnorm(&out, &layer.mlp_norm, eps, fit(&mut s.xn, n * c));
    let act = mlp_core(layer, n, s);
    layer.down.forward(act, &mut out, n, true);
    out
}

/// The SwiGLU activation (`[M, I]`, the input of down_proj) for the normed rows in `s.xn`.
pub(crate) fn mlp_core<'s>(layer: &Layer, m: usize, s: &'s mut Scratch) -> &'s [f32] {
    let i = layer.down.inp;
    let c = layer.gate_up.inp;
    let Scratch {
        xn, gate_up, act, ..
    } = s;
    let gu = fit(gate_up, m * 2 * i);
    layer.gate_up.forward(&xn[..m * c], gu, m, false);
    let act = fit(act, m * i);
    swiglu(gu, act, i);
    act
}
