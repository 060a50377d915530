//! The linear layer's backward, as the CPU `train::linear::linear_backward`: for
//! `y[M, N] = x[M, K] W[N, K]^T + b`, `dx += dy W`, `dW += dy^T x` and `db += sum_rows dy`,
//! each accumulated into what the gradient holds. W (and with it dW) may be chunked by rows
//! (an LM head larger than one binding): each chunk contributes its own slice of dy's columns
//! to dx and fills its own rows of dW.

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
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    a_off: u32,
    b_off: u32,
    _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<Params>() == 48);

const OP: &str = "linear_backward";

/// The gradients to compute; each is accumulated into.
pub struct LinearGrads<'a> {
    pub dx: Option<&'a GpuTensor>,
    pub dw: Option<&'a GpuTensor>,
    pub db: Option<&'a GpuTensor>,
}

fn key(gpu: &Gpu, entry: &'static str) -> KernelKey {
    let t = gpu.tuning();
    KernelKey {
        shader: Shader::LinearBackward,
        entry,
        subs: vec![("WG", t.mm_wg), ("TM", t.mm_tm), ("TN", t.mm_tn)],
    }
}

/// `c[M, N] += A B` with A and B described by strides (see the shader).
fn matmul_acc(
    gpu: &Gpu,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    c: &wgpu::Buffer,
    p: Params,
) -> GpuResult<()> {
    if p.m == 0 || p.n == 0 || p.k == 0 {
        return Ok(());
    }
    let t = gpu.tuning();
    let tiles =
        (p.m as usize).div_ceil(t.mm_tm as usize) * (p.n as usize).div_ceil(t.mm_tn as usize);
    gpu.launch(
        OP,
        &key(gpu, "matmul_acc"),
        &[a, b, c],
        bytemuck::bytes_of(&p),
        groups(tiles, t.mm_wg),
    )
}

/// Gradients of `y = x W^T + b` given `dy` (`[M, N]`), `x` (`[M, K]`) and `w` (`[N, K]`).
/// `dx` is `[M, K]`, `dw` `[N, K]` chunked as `w` is, `db` `[N]`.
pub fn linear_backward(
    gpu: &Gpu,
    dy: &GpuTensor,
    x: &GpuTensor,
    w: &GpuTensor,
    grads: LinearGrads,
) -> GpuResult<()> {
    let (m, k) = (x.rows(), x.cols());
    let n = w.rows();
    if w.cols() != k {
        return Err(GpuError::shape(
            OP,
            format!("x {:?} and w {:?} disagree on K", x.shape(), w.shape()),
        ));
    }
    expect_len(OP, "dy", dy.numel(), m * n)?;
    if dy.cols() != n && m > 0 {
        return Err(GpuError::shape(
            OP,
            format!("dy {:?} is not [M, {n}]", dy.shape()),
        ));
    }
    u32_of(OP, "dy", dy.numel())?;
    u32_of(OP, "x", x.numel())?;
    let dyb = dy.single(OP, "dy")?;
    let xb = x.single(OP, "x")?;
    if let Some(dx) = grads.dx {
        expect_len(OP, "dx", dx.numel(), m * k)?;
        let dxb = dx.single(OP, "dx")?;
        for ch in &w.chunks {
            // dx[M, K] += dy[:, n0..n0+len] . Wchunk[len, K].
            let p = Params {
                m: m as u32,
                k: ch.rows as u32,
                n: k as u32,
                a_rs: n as u32,
                a_cs: 1,
                b_rs: k as u32,
                b_cs: 1,
                a_off: ch.row0 as u32,
                b_off: 0,
                _pad: [0; 3],
            };
            u32_of(OP, "W chunk", ch.rows * k)?;
            matmul_acc(gpu, dyb, &ch.buf, dxb, p)?;
        }
    }
    if let Some(dw) = grads.dw {
        if dw.shape() != w.shape() {
            return Err(GpuError::shape(
                OP,
                format!("dw {:?} is not w's {:?}", dw.shape(), w.shape()),
            ));
        }
        let same_chunks = dw.chunks.len() == w.chunks.len()
            && dw
                .chunks
                .iter()
                .zip(&w.chunks)
                .all(|(a, b)| a.row0 == b.row0 && a.rows == b.rows);
        if !same_chunks {
            return Err(GpuError::shape(
                OP,
                "dw is not split into the same row chunks as w (upload both under one chunk size)",
            ));
        }
        for ch in &dw.chunks {
            // dW[n0.., K] += dy[:, n0..]^T . x: A(i, p) = dy[p * N + n0 + i].
            let p = Params {
                m: ch.rows as u32,
                k: m as u32,
                n: k as u32,
                a_rs: 1,
                a_cs: n as u32,
                b_rs: k as u32,
                b_cs: 1,
                a_off: ch.row0 as u32,
                b_off: 0,
                _pad: [0; 3],
            };
            matmul_acc(gpu, dyb, xb, &ch.buf, p)?;
        }
    }
    if let Some(db) = grads.db {
        expect_len(OP, "db", db.numel(), n)?;
        let p = Params {
            m: m as u32,
            k: 0,
            n: n as u32,
            a_rs: n as u32,
            a_cs: 1,
            b_rs: 0,
            b_cs: 0,
            a_off: 0,
            b_off: 0,
            _pad: [0; 3],
        };
        let wg = gpu.tuning().mm_wg;
        gpu.launch_bound(
            OP,
            &key(gpu, "col_sum"),
            &[(0, dyb), (2, db.single(OP, "db")?)],
            3,
            bytemuck::bytes_of(&p),
            groups(n, wg),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::train::linear::linear_backward as cpu_backward;

    /// `w_chunk`: bytes per chunk of W and dW.
    fn trial(gpu: &Gpu, rng: &mut Rng, m: usize, k: usize, n: usize, w_chunk: Option<u64>) {
        let (x, w, dy) = (
            rng.vec(m * k, 1.0),
            rng.vec(n * k, 1.0),
            rng.vec(m * n, 1.0),
        );
        // Gradients start non-zero: the backward accumulates.
        let (dx0, dw0, db0) = (rng.vec(m * k, 1.0), rng.vec(n * k, 1.0), rng.vec(n, 1.0));
        let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
        cpu_backward(
            &dy,
            &x,
            &w,
            m,
            k,
            n,
            Some(&mut dx),
            Some(&mut dw),
            Some(&mut db),
        );
        let up = |shape: &[usize], d: &[f32]| GpuTensor::upload(gpu, shape, d).unwrap();
        let (gdy, gx, gdx, gdb) = (
            up(&[m, n], &dy),
            up(&[m, k], &x),
            up(&[m, k], &dx0),
            up(&[n], &db0),
        );
        if let Some(b) = w_chunk {
            gpu.set_chunk_bytes(b);
        }
        let (gw, gdw) = (up(&[n, k], &w), up(&[n, k], &dw0));
        gpu.set_chunk_bytes(gpu.max_chunk_bytes());
        let grads = LinearGrads {
            dx: Some(&gdx),
            dw: Some(&gdw),
            db: Some(&gdb),
        };
        linear_backward(gpu, &gdy, &gx, &gw, grads).unwrap();
        let what = format!("linear backward {m}x{k}x{n} chunks {}", gw.chunk_count());
        let got = |t: &GpuTensor| t.download(gpu).unwrap();
        tol::MATMUL
            .check(&format!("{what} dx"), &got(&gdx), &dx)
            .unwrap();
        tol::MATMUL
            .check(&format!("{what} dw"), &got(&gdw), &dw)
            .unwrap();
        // Column sums in the CPU's order: bit-identical.
        assert_eq!(got(&gdb), db, "{what} db");
        if w_chunk.is_some() {
            assert!(gw.chunk_count() > 1, "W was not chunked");
        }
    }

    #[test]
    fn matches_cpu_backward_on_odd_and_llm_shapes() {
        with_gpu("linear backward", |gpu| {
            let mut rng = Rng::new(111);
            for &(m, k, n) in &[
                (1, 1, 1),
                (1, 77, 211),
                (7, 13, 5),
                (37, 129, 67),
                (61, 97, 131),
                (64, 576, 192),
                (5, 0, 9),
            ] {
                trial(gpu, &mut rng, m, k, n, None);
            }
        });
    }

    #[test]
    fn chunked_weight_gets_its_gradient_per_chunk() {
        with_gpu("linear backward chunked", |gpu| {
            let mut rng = Rng::new(112);
            // 53 rows of 37 floats in chunks of 10 rows: six chunks, the last partial.
            trial(gpu, &mut rng, 9, 37, 53, Some(10 * 37 * 4));
        });
    }

    #[test]
    fn rejects_mismatched_shapes_and_chunks() {
        with_gpu("linear backward shapes", |gpu| {
            let x = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            let w = GpuTensor::zeros(gpu, &[4, 3]).unwrap();
            let dy = GpuTensor::zeros(gpu, &[2, 5]).unwrap();
            let none = || LinearGrads {
                dx: None,
                dw: None,
                db: None,
            };
            assert!(linear_backward(gpu, &dy, &x, &w, none()).is_err());
            let dy = GpuTensor::zeros(gpu, &[2, 4]).unwrap();
            gpu.set_chunk_bytes(12);
            let dw = GpuTensor::zeros(gpu, &[4, 3]).unwrap();
            gpu.set_chunk_bytes(gpu.max_chunk_bytes());
            let g = LinearGrads {
                dw: Some(&dw),
                ..none()
            };
            let e = linear_backward(gpu, &dy, &x, &w, g).unwrap_err();
            assert!(e.to_string().contains("row chunks"), "{e}");
        });
    }
}
