//! The linear layer `y[M, N] (+)= x[M, K] W[N, K]^T (+ b)` (PyTorch's `[out, in]` weights, as
//! the CPU `matmul::linear`). W may be chunked by rows (an LM head larger than one binding):
//! each chunk fills its own range of output columns.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    k: u32,
    n: u32,
    n0: u32,
    n_len: u32,
    flags: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 32);

const OP: &str = "linear";

/// `y = x W^T (+ bias)`, or `y += ...` with `accumulate`. Shapes: x `[M, K]`, w `[N, K]`,
/// bias `[N]`, y `[M, N]` (any leading dims, viewed as matrices).
pub fn linear(
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    y: &GpuTensor,
    accumulate: bool,
) -> GpuResult<()> {
    let (m, k) = (x.rows(), x.cols());
    let n = w.rows();
    if w.cols() != k {
        return Err(GpuError::shape(
            OP,
            format!("x {:?} and w {:?} disagree on K", x.shape(), w.shape()),
        ));
    }
    expect_len(OP, "y", y.numel(), m * n)?;
    if y.cols() != n && m > 0 {
        return Err(GpuError::shape(
            OP,
            format!("y {:?} is not [M, {n}]", y.shape()),
        ));
    }
    if let Some(b) = bias {
        expect_len(OP, "bias", b.numel(), n)?;
    }
    let xb = x.single(OP, "x")?;
    let yb = y.single(OP, "y")?;
    let bb = match bias {
        Some(b) => b.single(OP, "bias")?,
        // Never read (flag bit 1 is clear), but the binding must hold some buffer.
        None => xb,
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    u32_of(OP, "M*N", m * n)?;
    u32_of(OP, "M*K", m * k)?;
    let t = gpu.tuning();
    let key = KernelKey {
        shader: Shader::Matmul,
        entry: "linear",
        subs: vec![("WG", t.mm_wg), ("TM", t.mm_tm), ("TN", t.mm_tn)],
    };
    let flags = u32::from(accumulate) | (u32::from(bias.is_some()) << 1);
    for chunk in &w.chunks {
        if chunk.rows == 0 {
            continue;
        }
        u32_of(OP, "W chunk", chunk.rows * k)?;
        let p = Params {
            m: m as u32,
            k: k as u32,
            n: n as u32,
            n0: chunk.row0 as u32,
            n_len: chunk.rows as u32,
            flags,
            _pad: [0; 2],
        };
        let tiles = m.div_ceil(t.mm_tm as usize) * chunk.rows.div_ceil(t.mm_tn as usize);
        gpu.launch(
            OP,
            &key,
            &[xb, &chunk.buf, bb, yb],
            bytemuck::bytes_of(&p),
            groups(tiles, t.mm_wg),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::matmul::linear as cpu_linear;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;

    /// `w_chunk`: bytes per chunk of W only (the other operands stay whole).
    #[allow(clippy::too_many_arguments)]
    fn trial(
        gpu: &Gpu,
        rng: &mut Rng,
        m: usize,
        k: usize,
        n: usize,
        bias: bool,
        acc: bool,
        w_chunk: Option<u64>,
    ) {
        let x = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 1.0);
        let b = rng.vec(n, 1.0);
        let y0 = rng.vec(m * n, 1.0);
        let mut want = y0.clone();
        cpu_linear(&x, &w, bias.then_some(&b[..]), &mut want, m, k, n, acc);
        let gx = GpuTensor::upload(gpu, &[m, k], &x).unwrap();
        if let Some(b) = w_chunk {
            gpu.set_chunk_bytes(b);
        }
        let gw = GpuTensor::upload(gpu, &[n, k], &w).unwrap();
        gpu.set_chunk_bytes(gpu.max_chunk_bytes());
        let gb = GpuTensor::upload(gpu, &[n], &b).unwrap();
        let gy = GpuTensor::upload(gpu, &[m, n], &y0).unwrap();
        linear(gpu, &gx, &gw, bias.then_some(&gb), &gy, acc).unwrap();
        let got = gy.download(gpu).unwrap();
        tol::MATMUL
            .check(
                &format!(
                    "linear {m}x{k}x{n} bias {bias} acc {acc} chunks {}",
                    gw.chunk_count()
                ),
                &got,
                &want,
            )
            .unwrap();
        if let Some(b) = w_chunk {
            assert!(
                gw.chunk_count() as u64 >= (n * k * 4) as u64 / b,
                "W was not chunked"
            );
        }
    }

    #[test]
    fn matches_cpu_on_odd_prime_and_llm_shapes() {
        with_gpu("matmul", |gpu| {
            let mut rng = Rng::new(11);
            for &(m, k, n, bias, acc) in &[
                (1, 1, 1, false, false),
                (1, 77, 211, true, false),
                (3, 48, 130, false, true),
                (7, 13, 5, true, true),
                (37, 129, 67, true, false),
                (61, 97, 131, false, false),
                (64, 576, 192, false, true),
                (5, 0, 9, true, true),
            ] {
                trial(gpu, &mut rng, m, k, n, bias, acc, None);
            }
        });
    }

    #[test]
    fn chunked_weight_fills_every_column_range() {
        with_gpu("matmul chunked", |gpu| {
            let mut rng = Rng::new(12);
            // 53 rows of 37 floats in chunks of 10 rows: six chunks, the last partial.
            let chunk = Some(10 * 37 * 4);
            trial(gpu, &mut rng, 9, 37, 53, true, false, chunk);
            trial(gpu, &mut rng, 4, 37, 53, false, true, chunk);
        });
    }

    #[test]
    fn rejects_mismatched_shapes() {
        with_gpu("matmul shapes", |gpu| {
            let x = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            let w = GpuTensor::zeros(gpu, &[4, 5]).unwrap();
            let y = GpuTensor::zeros(gpu, &[2, 4]).unwrap();
            let e = linear(gpu, &x, &w, None, &y, false).unwrap_err();
            assert!(e.to_string().contains("disagree on K"), "{e}");
            let w = GpuTensor::zeros(gpu, &[4, 3]).unwrap();
            let y = GpuTensor::zeros(gpu, &[2, 5]).unwrap();
            assert!(linear(gpu, &x, &w, None, &y, false).is_err());
        });
    }
}
