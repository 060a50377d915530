//! Grouped-query causal attention for training: the forward of `backend::cpu::attention`
//! that also keeps the softmax probabilities, and its backward.
//!
//! Legend: M = query rows, H = query heads, G = key/value heads, D = head dim, S = key rows,
//! P = sum over rows of `H * span.len` (the probabilities kept).

use rayon::prelude::*;

use super::linear::matmul_serial;
use crate::backend::cpu::attention::{attention_with_probs, AttnDims, KeySpan};

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

/// Query rows per tile of the backward: as in the forward, enough rows that the four
/// products per head are matrix products, few enough that a causal tile wastes little.
const TILE_ROWS: usize = 32;

/// Gradients of `attention_forward`: writes `dq` (`[M, H*D]`) and accumulates `dk`, `dv`
/// (`[S, G*D]`). Per head, with `P` the probabilities and `s` = 1/sqrt(D):
/// `dV += P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(P * dP))`, `dq = s dS K`,
/// `dK += s dS^T q`.
///
/// Rows that share a key span start (one packed sequence) are taken in tiles of up to
/// `TILE_ROWS`, and each product above is a matrix product over the tile's widest span (the
/// probabilities beyond a row's own span are zero, which is the mask). One task per
/// (sequence, key/value head) owns its key/value rows' gradient columns and its query heads'
/// `dq` columns, summing locally in a fixed order; the tasks' results are written back in
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
    let ops = Operands {
        dout,
        q,
        k,
        v,
        probs,
        poff: &poff,
        spans,
        dims,
    };
    let tasks: Vec<(usize, usize, usize)> = runs
        .iter()
        .flat_map(|&(r0, n)| (0..dims.kv_heads).map(move |g| (r0, n, g)))
        .collect();
    let parts: Vec<GroupGrads> = tasks
        .par_iter()
        .map(|&(r0, n, g)| ops.group_backward(r0, n, g))
        .collect();
    for (&(r0, n, g), part) in tasks.iter().zip(&parts) {
        for hh in 0..group {
            let h = g * group + hh;
            for i in 0..n {
                let src = &part.dq[(hh * n + i) * d..(hh * n + i + 1) * d];
                dq[(r0 + i) * qw + h * d..(r0 + i) * qw + (h + 1) * d].copy_from_slice(src);
            }
        }
        let lo = spans[r0].start;
        for j in 0..part.dk.len() / d {
            let at = (lo + j) * kw + g * d;
            let (gk, gv) = (&part.dk[j * d..(j + 1) * d], &part.dv[j * d..(j + 1) * d]);
            dk[at..at + d].iter_mut().zip(gk).for_each(|(a, b)| *a += b);
            dv[at..at + d].iter_mut().zip(gv).for_each(|(a, b)| *a += b);
        }
    }
}

/// The backward's inputs, with the offsets of each row's probabilities.
struct Operands<'a> {
    dout: &'a [f32],
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    probs: &'a [f32],
    poff: &'a [usize],
    spans: &'a [KeySpan],
    dims: AttnDims,
}

/// One task's gradients: `dq` of its query heads (`[group][rows][D]`), and `dk`, `dv` of its
/// key/value head over the run's keys (`[keys][D]`, keys counted from the span start).
struct GroupGrads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl Operands<'_> {
    /// The gradients of rows `r0..r0 + n` (sharing a span start) through key/value head `g`.
    fn group_backward(&self, r0: usize, n: usize, g: usize) -> GroupGrads {
        let (h_n, d) = (self.dims.heads, self.dims.head_dim);
        let (qw, kw) = (h_n * d, self.dims.kv_heads * d);
        let group = h_n / self.dims.kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let rows = &self.spans[r0..r0 + n];
        let lo = rows[0].start;
        let kmax = rows.iter().map(|s| s.len).max().unwrap_or(0);
        let mut out = GroupGrads {
            dq: vec![0.0; group * n * d],
            dk: vec![0.0; kmax * d],
            dv: vec![0.0; kmax * d],
        };
        let (k_g, v_g) = (&self.k[lo * kw + g * d..], &self.v[lo * kw + g * d..]);
        let (mut p, mut ds) = (Vec::new(), Vec::new());
        for i0 in (0..n).step_by(TILE_ROWS) {
            let t = TILE_ROWS.min(n - i0);
            let tile = &rows[i0..i0 + t];
            let width = tile.iter().map(|s| s.len).max().unwrap_or(0);
            for hh in 0..group {
                let h = g * group + hh;
                // This head's probabilities of the tile as a dense [t, width] block.
                p.clear();
                p.resize(t * width, 0.0);
                for (i, span) in tile.iter().enumerate() {
                    let at = self.poff[r0 + i0 + i] + h * span.len;
                    p[i * width..i * width + span.len]
                        .copy_from_slice(&self.probs[at..at + span.len]);
                }
                let d_o = &self.dout[(r0 + i0) * qw + h * d..];
                let q_h = &self.q[(r0 + i0) * qw + h * d..];
                // dV[keys] += P^T dO.
                matmul_serial(
                    &mut out.dv[..width * d],
                    (&p, (1, width)),
                    (d_o, (qw, 1)),
                    (width, t, d),
                    true,
                );
                // dP = dO V^T, then dS = s P (dP - rowsum(P dP)) in place.
                ds.resize(t * width, 0.0);
                matmul_serial(
                    &mut ds,
                    (d_o, (qw, 1)),
                    (v_g, (1, kw)),
                    (t, d, width),
                    false,
                );
                for (dsr, pr) in ds.chunks_exact_mut(width).zip(p.chunks_exact(width)) {
                    let sum: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    for (a, &b) in dsr.iter_mut().zip(pr) {
                        *a = b * (*a - sum) * scale;
                    }
                }
                // dq = dS K, dK[keys] += dS^T q.
                let dq_at = (hh * n + i0) * d;
                matmul_serial(
                    &mut out.dq[dq_at..dq_at + t * d],
                    (&ds, (width, 1)),
                    (k_g, (kw, 1)),
                    (t, width, d),
                    false,
                );
                matmul_serial(
                    &mut out.dk[..width * d],
                    (&ds, (1, width)),
                    (q_h, (qw, 1)),
                    (width, t, d),
                    true,
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::attention::attention;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;
    use crate::train::gradcheck::{check_fd, to64};

    /// f32 tiled products against the f64 row-wise sums, spans of up to 70 keys.
    const ATTENTION_BACKWARD: Tolerance = Tolerance {
        abs: 1e-5,
        rel: 1e-4,
    };

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

    /// The backward row by row and head by head with dot products, in f64: the slow composed
    /// version the tiled products are checked against on sizes finite differences cannot reach.
    #[allow(clippy::type_complexity)]
    fn rowwise_backward(
        dout: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        probs: &[f32],
        spans: &[KeySpan],
        dm: AttnDims,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (h_n, g_n, d) = (dm.heads, dm.kv_heads, dm.head_dim);
        let (qw, kw) = (h_n * d, g_n * d);
        let scale = 1.0 / (d as f64).sqrt();
        let (mut dq, mut dk, mut dv) = (
            vec![0.0f64; q.len()],
            vec![0.0f64; k.len()],
            vec![0.0f64; v.len()],
        );
        let mut at = 0;
        for (r, sp) in spans.iter().enumerate() {
            for h in 0..h_n {
                let g = h / (h_n / g_n);
                let p = &probs[at..at + sp.len];
                at += sp.len;
                let dp: Vec<f64> = (0..sp.len)
                    .map(|j| {
                        (0..d)
                            .map(|e| {
                                f64::from(dout[r * qw + h * d + e])
                                    * f64::from(v[(sp.start + j) * kw + g * d + e])
                            })
                            .sum()
                    })
                    .collect();
                let sum: f64 = p.iter().zip(&dp).map(|(&a, b)| f64::from(a) * b).sum();
                for j in 0..sp.len {
                    let kv = (sp.start + j) * kw + g * d;
                    let ds = f64::from(p[j]) * (dp[j] - sum) * scale;
                    for e in 0..d {
                        dv[kv + e] += f64::from(p[j]) * f64::from(dout[r * qw + h * d + e]);
                        dq[r * qw + h * d + e] += ds * f64::from(k[kv + e]);
                        dk[kv + e] += ds * f64::from(q[r * qw + h * d + e]);
                    }
                }
            }
        }
        let f = |x: Vec<f64>| x.into_iter().map(|a| a as f32).collect();
        (f(dq), f(dk), f(dv))
    }

    #[test]
    fn tiled_backward_matches_the_rowwise_version_across_tiles_and_sequences() {
        let mut rng = Rng::new(29);
        let dims = AttnDims {
            heads: 6,
            kv_heads: 2,
            head_dim: 8,
        };
        // Two causal sequences crossing tile boundaries (70 = 2 x 32 + 6, 33), then rows that
        // see a cached prefix of 5 keys (spans start at the same row, not causal from 0).
        let mut spans: Vec<KeySpan> = (0..70)
            .map(|t| KeySpan {
                start: 0,
                len: t + 1,
            })
            .collect();
        spans.extend((0..33).map(|t| KeySpan {
            start: 70,
            len: t + 1,
        }));
        spans.extend((0..37).map(|t| KeySpan {
            start: 103,
            len: 5 + t,
        }));
        let s_rows = 103 + 5 + 37;
        let m = spans.len();
        let (qw, kw) = (48, 16);
        let (q, k, v) = (
            rng.vec(m * qw, 1.5),
            rng.vec(s_rows * kw, 1.5),
            rng.vec(s_rows * kw, 1.0),
        );
        let mut out = vec![0.0; m * qw];
        let mut probs = Vec::new();
        attention_forward(&q, &k, &v, &spans, dims, &mut out, &mut probs);
        let dout = rng.vec(out.len(), 1.0);
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        attention_backward(
            &dout, &q, &k, &v, &probs, &spans, dims, &mut dq, &mut dk, &mut dv,
        );
        let (wq, wk, wv) = rowwise_backward(&dout, &q, &k, &v, &probs, &spans, dims);
        for (name, got, want) in [("dq", &dq, &wq), ("dk", &dk, &wk), ("dv", &dv, &wv)] {
            ATTENTION_BACKWARD
                .check(&format!("attention {name}"), got, want)
                .unwrap();
        }
        // The same bits on one thread.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (mut dq1, mut dk1, mut dv1) =
            (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        one.install(|| {
            attention_backward(
                &dout, &q, &k, &v, &probs, &spans, dims, &mut dq1, &mut dk1, &mut dv1,
            )
        });
        assert!(
            dq == dq1 && dk == dk1 && dv == dv1,
            "depends on the thread count"
        );
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
