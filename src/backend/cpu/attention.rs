//! Grouped-query causal attention (Ainslie et al. 2023) over packed rows: every query row
//! names the span of key/value rows it may see, which expresses the causal mask, the
//! separation of the sequences of a batch (no pad tokens exist, so none can leak), and a KV
//! cache (keys of earlier steps followed by the new ones) with one kernel.

use rayon::prelude::*;

use super::matmul::dot;
use super::softmax::softmax_inplace;

/// The key/value rows `start..start + len` that one query row attends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpan {
    pub start: usize,
    pub len: usize,
}

/// Head layout. Query head h reads key/value head `h / (heads / kv_heads)`, as HF's
/// `repeat_kv` does.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// `out[r] = softmax(q[r] . K[span]^T / sqrt(D)) . V[span]`, per head.
///
/// Legend: M = query rows, H = query heads, G = key/value heads, D = head dim, S = key rows.
/// `q`, `out`: `[M, H*D]`; `k`, `v`: `[S, G*D]`; `spans`: `[M]`, each non-empty and within S.
/// Rows run in parallel (prefill); a single row (decode) runs on this thread with `scratch`
/// as its score buffer, so decoding allocates nothing.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    spans: &[KeySpan],
    dims: AttnDims,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let AttnDims {
        heads,
        kv_heads,
        head_dim: d,
    } = dims;
    let (qw, kw) = (heads * d, kv_heads * d);
    assert!(
        heads > 0 && kv_heads > 0 && heads % kv_heads == 0,
        "attention: heads"
    );
    assert!(
        q.len() == spans.len() * qw && out.len() == q.len(),
        "attention: q/out shape"
    );
    assert!(
        k.len() == v.len() && k.len().is_multiple_of(kw),
        "attention: k/v shape"
    );
    let s_rows = k.len() / kw;
    assert!(
        spans.iter().all(|s| s.len > 0 && s.start + s.len <= s_rows),
        "attention: a key span is empty or out of range"
    );
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row = |scores: &mut Vec<f32>, (qr, (or, span)): (&[f32], (&mut [f32], &KeySpan))| {
        scores.resize(span.len, 0.0);
        for h in 0..heads {
            let g = h / group;
            let qh = &qr[h * d..(h + 1) * d];
            for (j, sc) in scores.iter_mut().enumerate() {
                let kr = (span.start + j) * kw + g * d;
                *sc = dot(qh, &k[kr..kr + d]) * scale;
            }
            softmax_inplace(scores);
            let oh = &mut or[h * d..(h + 1) * d];
            oh.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let vr = (span.start + j) * kw + g * d;
                for (o, &vv) in oh.iter_mut().zip(&v[vr..vr + d]) {
                    *o += p * vv;
                }
            }
        }
    };
    if spans.len() == 1 {
        row(scratch, (q, (out, &spans[0])));
    } else {
        q.par_chunks(qw)
            .zip(out.par_chunks_mut(qw).zip(spans.par_iter()))
            .for_each_init(Vec::new, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;

    /// Textbook attention in f64 with an explicit mask over all S keys.
    fn naive(q: &[f32], k: &[f32], v: &[f32], spans: &[KeySpan], dm: AttnDims) -> Vec<f32> {
        let (h, g, d) = (dm.heads, dm.kv_heads, dm.head_dim);
        let s_rows = k.len() / (g * d);
        let mut out = vec![0.0f32; q.len()];
        for (r, sp) in spans.iter().enumerate() {
            for hh in 0..h {
                let gg = hh / (h / g);
                let logits: Vec<f64> = (0..s_rows)
                    .map(|j| {
                        if j < sp.start || j >= sp.start + sp.len {
                            return f64::NEG_INFINITY;
                        }
                        (0..d)
                            .map(|e| {
                                f64::from(q[r * h * d + hh * d + e])
                                    * f64::from(k[j * g * d + gg * d + e])
                            })
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                for e in 0..d {
                    let o: f64 = (0..s_rows)
                        .map(|j| (logits[j] - m).exp() / z * f64::from(v[j * g * d + gg * d + e]))
                        .sum();
                    out[r * h * d + hh * d + e] = o as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_masked_naive_for_packed_batches_and_cache() {
        let mut rng = Rng::new(6);
        let dims = AttnDims {
            heads: 6,
            kv_heads: 2,
            head_dim: 10,
        };
        // Two packed sequences (lengths 5 and 3), causal within each: the packed batch case.
        let mut spans: Vec<KeySpan> = (0..5)
            .map(|t| KeySpan {
                start: 0,
                len: t + 1,
            })
            .collect();
        spans.extend((0..3).map(|t| KeySpan {
            start: 5,
            len: t + 1,
        }));
        let s_rows = 8;
        // And one decode row over a cache of 8 keys.
        let decode = [KeySpan { start: 0, len: 8 }];
        for sp in [&spans[..], &decode[..]] {
            let q = rng.vec(sp.len() * 60, 2.0);
            let k = rng.vec(s_rows * 20, 2.0);
            let v = rng.vec(s_rows * 20, 1.0);
            let mut out = vec![f32::NAN; q.len()];
            attention(&q, &k, &v, sp, dims, &mut out, &mut Vec::new());
            let r = naive(&q, &k, &v, sp, dims);
            Tolerance::F32_KERNEL
                .check(&format!("attention {} rows", sp.len()), &out, &r)
                .unwrap();
        }
    }
}
