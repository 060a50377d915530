//! Hessian accumulation for GPTQ/SparseGPT: `H = beta * H + alpha * X^T X` for `X` `[N, C]`
//! and a symmetric `H` `[C, C]` (the running `2/n * X^T X` average is formed by the caller's
//! choice of alpha and beta).

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    alpha: f32,
    beta: f32,
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "xtx";

/// Block edge per invocation: 4x4 register blocks keep every adapter's private memory small.
const T: u32 = 4;

pub fn xtx_accumulate(
    gpu: &Gpu,
    h: &GpuTensor,
    x: &GpuTensor,
    alpha: f32,
    beta: f32,
) -> GpuResult<()> {
    let (n, c) = (x.rows(), x.cols());
    expect_len(OP, "h", h.numel(), c * c)?;
    u32_of(OP, "h", c * c)?;
    u32_of(OP, "x", x.numel())?;
    if c == 0 {
        return Ok(());
    }
    let p = Params {
        rows: n as u32,
        c: c as u32,
        alpha,
        beta,
    };
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::Xtx,
        entry: "xtx",
        subs: vec![("WG", wg), ("T", T)],
    };
    let tiles = (c.div_ceil(T as usize)).pow(2);
    gpu.launch(
        OP,
        &key,
        &[x.single(OP, "x")?, h.single(OP, "h")?],
        bytemuck::bytes_of(&p),
        groups(tiles, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::cpu::tolerance::Tolerance;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::linalg::gram_f32;

    #[test]
    fn matches_the_cpu_gram_and_accumulates() {
        with_gpu("xtx", |gpu| {
            let mut rng = Rng::new(91);
            for &(n, c) in &[(1, 1), (5, 3), (37, 13), (129, 67)] {
                let x = rng.vec(n * c, 1.0);
                let g = gram_f32(&x, n, c);
                let h0 = {
                    // A symmetric starting H, as a running Hessian is.
                    let a = rng.vec(c * c, 1.0);
                    let mut h = vec![0.0; c * c];
                    for i in 0..c {
                        for j in 0..c {
                            h[i * c + j] = a[i * c + j] + a[j * c + i];
                        }
                    }
                    h
                };
                let (alpha, beta) = (0.25f32, 0.5f32);
                let want: Vec<f32> = h0
                    .iter()
                    .zip(&g)
                    .map(|(h, g)| beta * h + alpha * g)
                    .collect();
                let gh = GpuTensor::upload(gpu, &[c, c], &h0).unwrap();
                let gx = GpuTensor::upload(gpu, &[n, c], &x).unwrap();
                xtx_accumulate(gpu, &gh, &gx, alpha, beta).unwrap();
                // Both sides sum N products in f32 in different orders: ~sqrt(N) * 6e-8
                // relative to entries of size ~N/3.
                let tol = Tolerance {
                    abs: 1e-5,
                    rel: 1e-5,
                };
                tol.check(&format!("xtx {n}x{c}"), &gh.download(gpu).unwrap(), &want)
                    .unwrap();
            }
        });
    }
}
