//! Grouped-query causal attention over packed rows, with the CPU `attention`'s contract: each
//! query row names the span of key/value rows it sees (causal mask, sequence separation and
//! KV cache in one description). Operands may be column windows of wider rows, so q, k and v
//! are read straight out of the fused qkv projection.

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::backend::cpu::attention::{AttnDims, KeySpan};
use crate::backend::gpu::buffer::upload_u32;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    group: u32,
    scale: f32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    o_stride: u32,
    o_off: u32,
}
const _: () = assert!(std::mem::size_of::<Params>() == 48);

const OP: &str = "attention";

/// Head dims the shader is specialised for (its per-invocation accumulator is sized by D).
const MAX_HEAD_DIM: usize = 256;

/// Columns `offset..` of every row of `t`.
#[derive(Clone, Copy)]
pub struct Cols<'a> {
    pub t: &'a GpuTensor,
    pub offset: usize,
}

impl<'a> Cols<'a> {
    pub fn all(t: &'a GpuTensor) -> Self {
        Cols { t, offset: 0 }
    }
}

/// Key spans on the device, validated once against the number of key rows.
pub struct Spans {
    buf: wgpu::Buffer,
    rows: usize,
    key_rows: usize,
}

impl Spans {
    /// Query rows (one span each).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Key rows the spans index into.
    pub fn key_rows(&self) -> usize {
        self.key_rows
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }

    pub fn new(gpu: &Gpu, spans: &[KeySpan], key_rows: usize) -> GpuResult<Spans> {
        if let Some((r, s)) = spans
            .iter()
            .enumerate()
            .find(|(_, s)| s.len == 0 || s.start.saturating_add(s.len) > key_rows)
        {
            return Err(GpuError::shape(
                OP,
                format!("row {r}: key span {s:?} is empty or past the {key_rows} key rows"),
            ));
        }
        let flat: Vec<u32> = spans
            .iter()
            .flat_map(|s| [s.start as u32, s.len as u32])
            .collect();
        u32_of(OP, "key rows", key_rows)?;
        Ok(Spans {
            buf: upload_u32(gpu, OP, &flat)?,
            rows: spans.len(),
            key_rows,
        })
    }
}

fn check_window(what: &str, c: Cols, rows: usize, width: usize) -> GpuResult<()> {
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
    u32_of(OP, what, c.t.numel()).map(|_| ())
}

/// `out[r] = softmax(q[r] K[span]^T / sqrt(D)) V[span]` per head. Legend as on the CPU:
/// q/out `[M, H*D]` windows, k/v `[S, G*D]` windows, one span per query row.
pub fn attention(
    gpu: &Gpu,
    q: Cols,
    k: Cols,
    v: Cols,
    spans: &Spans,
    dims: AttnDims,
    out: Cols,
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
    let m = spans.rows;
    check_window("q", q, m, heads * d)?;
    check_window("out", out, m, heads * d)?;
    check_window("k", k, spans.key_rows, kv_heads * d)?;
    check_window("v", v, spans.key_rows, kv_heads * d)?;
    if std::ptr::eq(out.t, q.t) || std::ptr::eq(out.t, k.t) || std::ptr::eq(out.t, v.t) {
        return Err(GpuError::shape(
            OP,
            "out must not share a tensor with q, k or v",
        ));
    }
    let p = Params {
        rows: m as u32,
        heads: heads as u32,
        group: (heads / kv_heads) as u32,
        // As the CPU computes it, so both scale identically.
        scale: 1.0 / (d as f32).sqrt(),
        q_stride: q.t.cols() as u32,
        q_off: q.offset as u32,
        k_stride: k.t.cols() as u32,
        k_off: k.offset as u32,
        v_stride: v.t.cols() as u32,
        v_off: v.offset as u32,
        o_stride: out.t.cols() as u32,
        o_off: out.offset as u32,
    };
    // Small workgroups: each invocation carries 2*D floats of private state.
    let wg = 32;
    let key = KernelKey {
        shader: Shader::Attention,
        entry: "attend",
        subs: vec![("WG", wg), ("D", d as u32)],
    };
    gpu.launch(
        OP,
        &key,
        &[
            q.t.single(OP, "q")?,
            k.t.single(OP, "k")?,
            v.t.single(OP, "v")?,
            &spans.buf,
            out.t.single(OP, "out")?,
        ],
        bytemuck::bytes_of(&p),
        groups(m * heads, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::attention::attention as cpu_attention;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;

    fn causal(lens: &[usize]) -> Vec<KeySpan> {
        let mut spans = Vec::new();
        let mut start = 0;
        for &l in lens {
            spans.extend((0..l).map(|t| KeySpan { start, len: t + 1 }));
            start += l;
        }
        spans
    }

    fn trial(gpu: &Gpu, rng: &mut Rng, spans: &[KeySpan], s_rows: usize, dims: AttnDims) {
        let (qw, kw) = (dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim);
        let q = rng.vec(spans.len() * qw, 2.0);
        let k = rng.vec(s_rows * kw, 2.0);
        let v = rng.vec(s_rows * kw, 1.0);
        let mut want = vec![0.0; q.len()];
        cpu_attention(&q, &k, &v, spans, dims, &mut want, &mut Vec::new());
        // GPU operands packed as one fused row [q | k | v] per row, as in the model, when
        // there are as many key rows as query rows; separate tensors otherwise.
        let got = if s_rows == spans.len() {
            let w = qw + 2 * kw;
            let mut fused = vec![0.0; s_rows * w];
            for r in 0..s_rows {
                fused[r * w..r * w + qw].copy_from_slice(&q[r * qw..(r + 1) * qw]);
                fused[r * w + qw..r * w + qw + kw].copy_from_slice(&k[r * kw..(r + 1) * kw]);
                fused[r * w + qw + kw..(r + 1) * w].copy_from_slice(&v[r * kw..(r + 1) * kw]);
            }
            let f = GpuTensor::upload(gpu, &[s_rows, w], &fused).unwrap();
            let o = GpuTensor::zeros(gpu, &[spans.len(), qw]).unwrap();
            let sp = Spans::new(gpu, spans, s_rows).unwrap();
            let (qc, kc, vc) = (
                Cols { t: &f, offset: 0 },
                Cols { t: &f, offset: qw },
                Cols {
                    t: &f,
                    offset: qw + kw,
                },
            );
            attention(gpu, qc, kc, vc, &sp, dims, Cols::all(&o)).unwrap();
            o.download(gpu).unwrap()
        } else {
            let gq = GpuTensor::upload(gpu, &[spans.len(), qw], &q).unwrap();
            let gk = GpuTensor::upload(gpu, &[s_rows, kw], &k).unwrap();
            let gv = GpuTensor::upload(gpu, &[s_rows, kw], &v).unwrap();
            let o = GpuTensor::zeros(gpu, &[spans.len(), qw]).unwrap();
            let sp = Spans::new(gpu, spans, s_rows).unwrap();
            let (qc, kc, vc) = (Cols::all(&gq), Cols::all(&gk), Cols::all(&gv));
            attention(gpu, qc, kc, vc, &sp, dims, Cols::all(&o)).unwrap();
            o.download(gpu).unwrap()
        };
        tol::REDUCTION
            .check(
                &format!("attention {} rows {dims:?}", spans.len()),
                &got,
                &want,
            )
            .unwrap();
    }

    #[test]
    fn matches_cpu_on_packed_batches_gqa_and_cache() {
        with_gpu("attention", |gpu| {
            let mut rng = Rng::new(71);
            let gqa = AttnDims {
                heads: 6,
                kv_heads: 2,
                head_dim: 10,
            };
            trial(gpu, &mut rng, &causal(&[5, 3]), 8, gqa);
            let odd = AttnDims {
                heads: 7,
                kv_heads: 7,
                head_dim: 13,
            };
            trial(gpu, &mut rng, &causal(&[1, 17, 4]), 22, odd);
            let mqa = AttnDims {
                heads: 9,
                kv_heads: 1,
                head_dim: 64,
            };
            trial(gpu, &mut rng, &causal(&[67]), 67, mqa);
            // Decode: two rows over a 131-key cache.
            let dec = [
                KeySpan { start: 0, len: 131 },
                KeySpan { start: 0, len: 97 },
            ];
            trial(gpu, &mut rng, &dec, 131, gqa);
        });
    }

    #[test]
    fn rejects_bad_spans_and_heads() {
        with_gpu("attention shapes", |gpu| {
            assert!(Spans::new(gpu, &[KeySpan { start: 3, len: 2 }], 4).is_err());
            assert!(Spans::new(gpu, &[KeySpan { start: 0, len: 0 }], 4).is_err());
            let t = GpuTensor::zeros(gpu, &[1, 12]).unwrap();
            let o = GpuTensor::zeros(gpu, &[1, 12]).unwrap();
            let sp = Spans::new(gpu, &[KeySpan { start: 0, len: 1 }], 1).unwrap();
            let bad = AttnDims {
                heads: 3,
                kv_heads: 2,
                head_dim: 4,
            };
            let c = Cols::all(&t);
            assert!(attention(gpu, c, c, c, &sp, bad, Cols::all(&o)).is_err());
        });
    }
}
