//! Grouped-query causal attention backward, as the CPU `train::attention::attention_backward`:
//! writes `dq` and accumulates `dk`, `dv`, from `dout` and the forward's q, k, v and key spans.
//! The softmax is recomputed from q and k instead of being read from stored probabilities (the
//! device keeps no `[P]` buffer), and every key gradient is summed by a single invocation, so
//! the result is deterministic. Operands are column windows (`Cols`), as in the forward, so
//! q/k/v can be read from the fused qkv rows and the gradients written into the fused
//! gradient.

use bytemuck::{Pod, Zeroable};

use super::attention::{Cols, Spans};
use super::u32_of;
use crate::backend::cpu::attention::AttnDims;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    group: u32,
    scale: f32,
    key_rows: u32,
    kv_heads: u32,
    q: [u32; 2],
    k: [u32; 2],
    v: [u32; 2],
    dout: [u32; 2],
    dq: [u32; 2],
    dk: [u32; 2],
    dv: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 80);

const OP: &str = "attention_backward";

/// Head dims the shader is specialised for (four `[D]` private arrays per invocation).
const MAX_HEAD_DIM: usize = 256;

/// The forward's operands.
#[derive(Clone, Copy)]
pub struct AttnInputs<'a> {
    pub q: Cols<'a>,
    pub k: Cols<'a>,
    pub v: Cols<'a>,
}

/// The gradients: `dq` is written, `dk` and `dv` are added to.
#[derive(Clone, Copy)]
pub struct AttnGrads<'a> {
    pub dq: Cols<'a>,
    pub dk: Cols<'a>,
    pub dv: Cols<'a>,
}

fn window(what: &str, c: Cols, rows: usize, width: usize) -> GpuResult<[u32; 2]> {
    if c.t.rows() < rows || c.offset + width > c.t.cols() {
        return Err(GpuError::shape(
            OP,
            format!(
                "{what} {:?} has no [{rows}, {width}] window at column {}",
                c.t.shape(),
                c.offset
            ),
        ));
    }
    u32_of(OP, what, c.t.numel())?;
    Ok([c.t.cols() as u32, c.offset as u32])
}

fn same(a: &GpuTensor, b: &GpuTensor) -> bool {
    std::ptr::eq(a, b)
}

pub fn attention_backward(
    gpu: &Gpu,
    dout: Cols,
    inputs: AttnInputs,
    spans: &Spans,
    dims: AttnDims,
    grads: AttnGrads,
) -> GpuResult<()> {
    let AttnDims {
        heads,
        kv_heads,
        head_dim: d,
    } = dims;
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || d == 0 || d > MAX_HEAD_DIM {
        return Err(GpuError::shape(
            OP,
            format!("{heads} heads over {kv_heads} kv heads of dim {d} (at most {MAX_HEAD_DIM})"),
        ));
    }
    let (m, s_rows) = (spans.rows(), spans.key_rows());
    let (qw, kw) = (heads * d, kv_heads * d);
    let AttnInputs { q, k, v } = inputs;
    let AttnGrads { dq, dk, dv } = grads;
    for out in [dq.t, dk.t, dv.t] {
        if [q.t, k.t, v.t, dout.t].iter().any(|t| same(t, out)) {
            return Err(GpuError::shape(
                OP,
                "a gradient must not share a tensor with q, k, v or dout",
            ));
        }
    }
    let p = Params {
        rows: m as u32,
        heads: heads as u32,
        group: (heads / kv_heads) as u32,
        scale: 1.0 / (d as f32).sqrt(),
        key_rows: s_rows as u32,
        kv_heads: kv_heads as u32,
        q: window("q", q, m, qw)?,
        k: window("k", k, s_rows, kw)?,
        v: window("v", v, s_rows, kw)?,
        dout: window("dout", dout, m, qw)?,
        dq: window("dq", dq, m, qw)?,
        dk: window("dk", dk, s_rows, kw)?,
        dv: window("dv", dv, s_rows, kw)?,
    };
    if m == 0 {
        return Ok(());
    }
    let stats = GpuTensor::zeros(gpu, &[m * heads, 2])?;
    let wg = 32;
    let key = |entry| KernelKey {
        shader: Shader::AttentionBackward,
        entry,
        subs: vec![("WG", wg), ("D", d as u32)],
    };
    let (qb, kb, vb, sb, ob, stb) = (
        q.t.single(OP, "q")?,
        k.t.single(OP, "k")?,
        v.t.single(OP, "v")?,
        spans.buffer(),
        dout.t.single(OP, "dout")?,
        stats.single(OP, "stats")?,
    );
    let meta = bytemuck::bytes_of(&p);
    gpu.launch_bound(
        OP,
        &key("attn_dq"),
        &[
            (0, qb),
            (1, kb),
            (2, vb),
            (3, sb),
            (4, ob),
            (5, stb),
            (6, dq.t.single(OP, "dq")?),
        ],
        9,
        meta,
        groups(m * heads, wg),
    )?;
    gpu.launch_bound(
        OP,
        &key("attn_dkv"),
        &[
            (0, qb),
            (1, kb),
            (2, vb),
            (3, sb),
            (4, ob),
            (5, stb),
            (7, dk.t.single(OP, "dk")?),
            (8, dv.t.single(OP, "dv")?),
        ],
        9,
        meta,
        groups(s_rows * kv_heads, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::attention::KeySpan;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::train::attention::{attention_backward as cpu_backward, attention_forward};

    fn at(t: &GpuTensor, offset: usize) -> Cols<'_> {
        Cols { t, offset }
    }

    fn causal(lens: &[usize]) -> Vec<KeySpan> {
        let mut spans = Vec::new();
        let mut start = 0;
        for &l in lens {
            spans.extend((0..l).map(|t| KeySpan { start, len: t + 1 }));
            start += l;
        }
        spans
    }

    /// Runs both backwards; on the GPU q, k, v come out of one fused `[q | k | v]` tensor and
    /// the gradients go into one fused gradient tensor, as a training step lays them out.
    fn trial(gpu: &Gpu, rng: &mut Rng, spans: &[KeySpan], dims: AttnDims) {
        let m = spans.len();
        let (qw, kw) = (dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim);
        let (q, k, v) = (
            rng.vec(m * qw, 2.0),
            rng.vec(m * kw, 2.0),
            rng.vec(m * kw, 1.0),
        );
        let dout = rng.vec(m * qw, 1.0);
        let mut out = vec![0.0; m * qw];
        let mut probs = Vec::new();
        attention_forward(&q, &k, &v, spans, dims, &mut out, &mut probs);
        let (dk0, dv0) = (rng.vec(m * kw, 1.0), rng.vec(m * kw, 1.0));
        let (mut dq, mut dk, mut dv) = (vec![0.0; m * qw], dk0.clone(), dv0.clone());
        cpu_backward(
            &dout, &q, &k, &v, &probs, spans, dims, &mut dq, &mut dk, &mut dv,
        );
        let w = qw + 2 * kw;
        let fuse = |a: &[f32], b: &[f32], c: &[f32]| -> Vec<f32> {
            (0..m)
                .flat_map(|r| {
                    a[r * qw..(r + 1) * qw]
                        .iter()
                        .chain(&b[r * kw..(r + 1) * kw])
                        .chain(&c[r * kw..(r + 1) * kw])
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let qkv = GpuTensor::upload(gpu, &[m, w], &fuse(&q, &k, &v)).unwrap();
        // dq's slot starts as garbage: the backward overwrites it.
        let garbage = rng.vec(m * qw, 9.0);
        let dqkv = GpuTensor::upload(gpu, &[m, w], &fuse(&garbage, &dk0, &dv0)).unwrap();
        let gdo = GpuTensor::upload(gpu, &[m, qw], &dout).unwrap();
        let sp = Spans::new(gpu, spans, m).unwrap();
        attention_backward(
            gpu,
            Cols::all(&gdo),
            AttnInputs {
                q: at(&qkv, 0),
                k: at(&qkv, qw),
                v: at(&qkv, qw + kw),
            },
            &sp,
            dims,
            AttnGrads {
                dq: at(&dqkv, 0),
                dk: at(&dqkv, qw),
                dv: at(&dqkv, qw + kw),
            },
        )
        .unwrap();
        let got = dqkv.download(gpu).unwrap();
        let what = format!("attention backward {m} rows {dims:?}");
        tol::GRAD.check(&what, &got, &fuse(&dq, &dk, &dv)).unwrap();
    }

    #[test]
    fn matches_cpu_backward_on_packed_batches_gqa_and_mqa() {
        with_gpu("attention backward", |gpu| {
            let mut rng = Rng::new(151);
            let gqa = AttnDims {
                heads: 6,
                kv_heads: 2,
                head_dim: 10,
            };
            trial(gpu, &mut rng, &causal(&[5, 3]), gqa);
            let odd = AttnDims {
                heads: 7,
                kv_heads: 7,
                head_dim: 13,
            };
            trial(gpu, &mut rng, &causal(&[1, 17, 4]), odd);
            let mqa = AttnDims {
                heads: 9,
                kv_heads: 3,
                head_dim: 64,
            };
            trial(gpu, &mut rng, &causal(&[67]), mqa);
        });
    }

    #[test]
    fn rejects_aliased_gradients_and_bad_heads() {
        with_gpu("attention backward shapes", |gpu| {
            let t = GpuTensor::zeros(gpu, &[1, 12]).unwrap();
            let g = GpuTensor::zeros(gpu, &[1, 12]).unwrap();
            let sp = Spans::new(gpu, &[KeySpan { start: 0, len: 1 }], 1).unwrap();
            let dims = AttnDims {
                heads: 2,
                kv_heads: 1,
                head_dim: 4,
            };
            let inputs = AttnInputs {
                q: at(&t, 0),
                k: at(&t, 8),
                v: at(&t, 8),
            };
            let ok = AttnGrads {
                dq: at(&g, 0),
                dk: at(&g, 8),
                dv: at(&g, 8),
            };
            assert!(attention_backward(gpu, at(&t, 0), inputs, &sp, dims, ok).is_ok());
            let aliased = AttnGrads {
                dq: at(&t, 0),
                ..ok
            };
            assert!(attention_backward(gpu, at(&t, 0), inputs, &sp, dims, aliased).is_err());
            let bad = AttnDims {
                heads: 3,
                kv_heads: 2,
                head_dim: 4,
            };
            assert!(attention_backward(gpu, at(&t, 0), inputs, &sp, bad, ok).is_err());
        });
    }
}
