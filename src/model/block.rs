//! One decoder block's forward over packed rows, shared by the batched forward (keys are the
//! rows themselves) and the KV-cache decoder (keys are the cache): pre-norm attention with
//! rotary q/k, then the pre-norm SwiGLU MLP, each added to the residual stream.

use crate::backend::cpu::attention::{attention, AttnDims, KeySpan};
use crate::backend::cpu::{rmsnorm::rmsnorm, swiglu::swiglu};
use crate::backend::Tensor;

use super::hooks::{Captures, LayerPlan, Tap};
use super::weights::Llama;

/// Reusable work buffers, grown to the largest row count seen and never shrunk, so decoding
/// one token at a time allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    xn: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    att: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    scores: Vec<f32>,
}

fn fit(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
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
/// `write_at..write_at + M` and attention reads rows `0..write_at + M`.
pub(crate) struct KvSlot<'a> {
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    pub write_at: usize,
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
    /// Runs block `l` on `x` (`[M, C]`, updated in place).
    ///
    /// Legend: M = rows, C = hidden, H/G = query/kv heads, D = head dim, I = intermediate.
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
        let cfg = &self.config;
        let layer = &self.layers[l];
        let m = rows.pos.len();
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let i = cfg.intermediate_size;
        let eps = cfg.rms_norm_eps as f32;
        let taps: &[(Tap, &str)] = plan.map_or(&[], |p| &p.taps);

        // Attention.
        let xn = fit(&mut s.xn, m * c);
        rmsnorm(x, &layer.attn_norm, eps, xn);
        capture(caps, taps, Tap::Attn, xn, m);
        let qkv = fit(&mut s.qkv, m * (qd + 2 * kvd));
        layer.qkv.forward(xn, qkv, m, false);
        let q = fit(&mut s.q, m * qd);
        let w0 = kv.write_at;
        for (r, row) in qkv.chunks_exact(qd + 2 * kvd).enumerate() {
            q[r * qd..(r + 1) * qd].copy_from_slice(&row[..qd]);
            kv.k[(w0 + r) * kvd..(w0 + r + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
            kv.v[(w0 + r) * kvd..(w0 + r + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
        }
        self.rope.rotate_rows(q, rows.pos);
        self.rope
            .rotate_rows(&mut kv.k[w0 * kvd..(w0 + m) * kvd], rows.pos);
        let att = fit(&mut s.att, m * qd);
        let dims = AttnDims {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: d,
        };
        let seen = (w0 + m) * kvd;
        attention(
            q,
            &kv.k[..seen],
            &kv.v[..seen],
            rows.spans,
            dims,
            att,
            &mut s.scores,
        );
        capture(caps, taps, Tap::O, att, m);
        // The residual add is the GEMM's accumulate.
        layer.o.forward(att, x, m, true);

        // MLP.
        let xn = fit(&mut s.xn, m * c);
        rmsnorm(x, &layer.mlp_norm, eps, xn);
        capture(caps, taps, Tap::Mlp, xn, m);
        let gu = fit(&mut s.gate_up, m * 2 * i);
        layer.gate_up.forward(xn, gu, m, false);
        let act = fit(&mut s.act, m * i);
        swiglu(gu, act, i);
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
}
