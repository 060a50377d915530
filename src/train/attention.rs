//! Grouped-query causal attention for training: the forward of `backend::cpu::attention`
//! that also keeps the softmax probabilities, and its backward.
//!
//! Legend: M = query rows, H = query heads, G = key/value heads, D = head dim, S = key rows,
//! P = sum over rows of `H * span.len` (the probabilities kept).

use rayon::prelude::*;

use crate::backend::cpu::attention::{attention_with_probs, AttnDims, KeySpan};
use crate::backend::cpu::matmul::dot;

/// Splits `buf` into consecutive chunks of the given lengths (the last may be short if the
/// lengths overrun, which the callers' shape checks rule out).
fn split_lens(mut buf: &mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    for len in lens {
        let n = len.min(buf.len());
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(n);
        out.push(head);
        buf = tail;
    }
    out
}

fn check(q: &[f32], k: &[f32], v: &[f32], spans: &[KeySpan], dims: AttnDims) -> usize {
    let (qw, kw) = (dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim);
    assert!(
        dims.kv_heads > 0 && dims.heads.is_multiple_of(dims.kv_heads),
        "attention: heads"
    );
    assert!(q.len() == spans.len() * qw, "attention: q shape");
    assert!(
        k.len() == v.len() && k.len().is_multiple_of(kw),
        "attention: k/v shape"
    );
    let s_rows = k.len() / kw;
    assert!(
        spans.iter().all(|s| s.len > 0 && s.start + s.len <= s_rows),
        "attention: a key span is empty or out of range"
    );
    spans.iter().map(|s| s.len * dims.heads).sum()
}

/// `out[M, H*D] = softmax(q . K[span]^T / sqrt(D)) . V[span]`, keeping the probabilities in
/// `probs` (`[P]`, row by row, head by head), which the backward reads.
pub fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    spans: &[KeySpan],
    dims: AttnDims,
    out: &mut [f32],
    probs: &mut Vec<f32>,
) {
    let total = check(q, k, v, spans, dims);
    assert_eq!(out.len(), q.len(), "attention_forward: out shape");
    probs.clear();
    probs.resize(total, 0.0);
    // The inference kernel itself, so training's forward equals `forward`'s bit for bit.
    attention_with_probs(q, k, v, spans, dims, out, probs);
}

/// Gradients of `attention_forward`: writes `dq` (`[M, H*D]`) and accumulates `dk`, `dv`
/// (`[S, G*D]`). Per head, with `P` the probabilities and `s` = 1/sqrt(D):
/// `dV += P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(P * dP))`, `dq = s dS K`,
/// `dK += s dS^T q`.
///
/// Rows run in parallel in groups that share a key span start (the rows of one packed
/// sequence), each group summing its key gradients locally; the groups are then added in
/// order, so the result does not depend on the thread count.
// The operands are the forward's inputs plus the gradients; bundling them would only rename.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    spans: &[KeySpan],
    dims: AttnDims,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let total = check(q, k, v, spans, dims);
    assert!(
        probs.len() == total && dout.len() == q.len() && dq.len() == q.len(),
        "attention_backward: probs/dout/dq shape"
    );
    assert!(
        dk.len() == k.len() && dv.len() == v.len(),
        "attention_backward: dk/dv shape"
    );
    let (h_n, d) = (dims.heads, dims.head_dim);
    let (qw, kw) = (h_n * d, dims.kv_heads * d);
    let group = h_n / dims.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    // Runs of consecutive rows with the same span start.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (r, s) in spans.iter().enumerate() {
        match runs.last_mut() {
            Some((r0, n)) if spans[*r0].start == s.start => *n += 1,
            _ => runs.push((r, 1)),
        }
    }
    let mut poff = Vec::with_capacity(spans.len() + 1);
    poff.push(0);
    for s in spans {
        poff.push(poff[poff.len() - 1] + s.len * h_n);
    }
    let dq_runs = split_lens(dq, runs.iter().map(|&(_, n)| n * qw));
    let partial: Vec<(usize, Vec<f32>, Vec<f32>)> = runs
        .par_iter()
        .zip(dq_runs)
        .map(|(&(r0, n), dq_run)| {
            let start = spans[r0].start;
            let kmax = spans[r0..r0 + n].iter().map(|s| s.len).max().unwrap_or(0);
            let (mut ldk, mut ldv) = (vec![0.0f32; kmax * kw], vec![0.0f32; kmax * kw]);
            let mut ds = Vec::new();
            for (i, dqr) in dq_run.chunks_exact_mut(qw).enumerate() {
                let r = r0 + i;
                let len = spans[r].len;
                dqr.fill(0.0);
                for h in 0..h_n {
                    let g = h / group;
                    let p = &probs[poff[r] + h * len..poff[r] + (h + 1) * len];
                    let d_o = &dout[r * qw + h * d..r * qw + (h + 1) * d];
                    let qh = &q[r * qw + h * d..r * qw + (h + 1) * d];
                    ds.clear();
                    let mut sum = 0.0f32;
                    for (j, &pj) in p.iter().enumerate() {
                        let kv = (start + j) * kw + g * d;
                        let dp = dot(d_o, &v[kv..kv + d]);
                        sum += pj * dp;
                        ds.push(dp);
                        let lv = &mut ldv[j * kw + g * d..j * kw + (g + 1) * d];
                        for (a, &b) in lv.iter_mut().zip(d_o) {
                            *a += pj * b;
                        }
                    }
                    let dqh = &mut dqr[h * d..(h + 1) * d];
                    for (j, (&pj, &dp)) in p.iter().zip(&ds).enumerate() {
                        let s = pj * (dp - sum) * scale;
                        let kv = (start + j) * kw + g * d;
                        for (a, &b) in dqh.iter_mut().zip(&k[kv..kv + d]) {
                            *a += s * b;
                        }
                        let lk = &mut ldk[j * kw + g * d..j * kw + (g + 1) * d];
                        for (a, &b) in lk.iter_mut().zip(qh) {
                            *a += s * b;
                        }
                    }
                }
            }
            (start, ldk, ldv)
        })
        .collect();
    for (start, ldk, ldv) in partial {
        let at = start * kw;
        for (a, b) in dk[at..at + ldk.len()].iter_mut().zip(&ldk) {
            *a += b;
        }
        for (a, b) in dv[at..at + ldv.len()].iter_mut().zip(&ldv) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::attention::attention;
    use crate::backend::cpu::testutil::Rng;
    use crate::train::gradcheck::{check_fd, to64};

    /// Textbook masked attention in f64.
    fn reference(q: &[f64], k: &[f64], v: &[f64], spans: &[KeySpan], dm: AttnDims) -> Vec<f64> {
        let (h, g, d) = (dm.heads, dm.kv_heads, dm.head_dim);
        let mut out = vec![0.0; q.len()];
        for (r, sp) in spans.iter().enumerate() {
            for hh in 0..h {
                let gg = hh / (h / g);
                let logits: Vec<f64> = (sp.start..sp.start + sp.len)
                    .map(|j| {
                        (0..d)
                            .map(|e| q[r * h * d + hh * d + e] * k[j * g * d + gg * d + e])
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                for e in 0..d {
                    out[r * h * d + hh * d + e] = (0..sp.len)
                        .map(|j| (logits[j] - m).exp() / z * v[(sp.start + j) * g * d + gg * d + e])
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn gradients_match_finite_differences_on_packed_sequences() {
        let mut rng = Rng::new(16);
        let dims = AttnDims {
            heads: 4,
            kv_heads: 2,
            head_dim: 3,
        };
        // Two packed sequences of lengths 4 and 3, causal within each.
        let spans: Vec<KeySpan> = (0..4)
            .map(|t| KeySpan {
                start: 0,
                len: t + 1,
            })
            .chain((0..3).map(|t| KeySpan {
                start: 4,
                len: t + 1,
            }))
            .collect();
        let m = spans.len();
        let (q, k, v) = (
            rng.vec(m * 12, 1.5),
            rng.vec(m * 6, 1.5),
            rng.vec(m * 6, 1.0),
        );
        let mut out = vec![0.0; m * 12];
        let mut probs = Vec::new();
        attention_forward(&q, &k, &v, &spans, dims, &mut out, &mut probs);
        let mut out_backend = vec![0.0; m * 12];
        attention(&q, &k, &v, &spans, dims, &mut out_backend, &mut Vec::new());
        assert_eq!(
            out, out_backend,
            "training attention differs from the inference kernel"
        );
        let dout = rng.vec(out.len(), 1.0);
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        attention_backward(
            &dout, &q, &k, &v, &probs, &spans, dims, &mut dq, &mut dk, &mut dv,
        );
        let (q64, k64, v64, d64) = (to64(&q), to64(&k), to64(&v), to64(&dout));
        let loss = |o: Vec<f64>| o.iter().zip(&d64).map(|(a, b)| a * b).sum::<f64>();
        check_fd("attention dq", &dq, &q64, |x| {
            loss(reference(x, &k64, &v64, &spans, dims))
        });
        check_fd("attention dk", &dk, &k64, |x| {
            loss(reference(&q64, x, &v64, &spans, dims))
        });
        check_fd("attention dv", &dv, &v64, |x| {
            loss(reference(&q64, &k64, x, &spans, dims))
        });
    }
}
