//! RMSNorm over the rows of `x` (`[M, C]`) with gain `w` (`[C]`), as the CPU `rmsnorm`.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    eps: f32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "rmsnorm";

/// `y = x / sqrt(mean(x^2) + eps) * w`, row by row. One workgroup per row.
pub fn rmsnorm(gpu: &Gpu, x: &GpuTensor, w: &GpuTensor, eps: f32, y: &GpuTensor) -> GpuResult<()> {
    let c = w.numel();
    if c == 0 || x.cols() != c {
        return Err(GpuError::shape(
            OP,
            format!("x {:?} rows are not the gain's {c} channels", x.shape()),
        ));
    }
    expect_len(OP, "y", y.numel(), x.numel())?;
    let rows = x.rows();
    let p = Params {
        rows: u32_of(OP, "rows", rows)?,
        c: u32_of(OP, "channels", c)?,
        eps,
        _pad: 0,
    };
    // The tree reduction halves the workgroup, so its size must be a power of two.
    let wg = gpu.tuning().wg.next_power_of_two().min(256);
    let key = KernelKey {
        shader: Shader::Rmsnorm,
        entry: "rmsnorm",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[x.single(OP, "x")?, w.single(OP, "w")?, y.single(OP, "y")?],
        bytemuck::bytes_of(&p),
        rows as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::rmsnorm::rmsnorm as cpu_rmsnorm;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;

    #[test]
    fn matches_cpu_including_extreme_magnitudes() {
        with_gpu("rmsnorm", |gpu| {
            let mut rng = Rng::new(21);
            for &(rows, c, scale) in &[
                (1, 1, 1.0),
                (3, 77, 1.0),
                (19, 576, 1.0),
                (2, 1031, 3.0),
                (5, 77, 1e15),
                (5, 77, 1e-15),
                (4, 13, 1e25),
            ] {
                let x = rng.vec(rows * c, scale);
                let w = rng.vec(c, 2.0);
                let mut want = vec![0.0; x.len()];
                cpu_rmsnorm(&x, &w, 1e-5, &mut want);
                let gx = GpuTensor::upload(gpu, &[rows, c], &x).unwrap();
                let gw = GpuTensor::upload(gpu, &[c], &w).unwrap();
                let gy = GpuTensor::zeros(gpu, &[rows, c]).unwrap();
                rmsnorm(gpu, &gx, &gw, 1e-5, &gy).unwrap();
                let got = gy.download(gpu).unwrap();
                tol::REDUCTION
                    .check(&format!("rmsnorm {rows}x{c} scale {scale}"), &got, &want)
                    .unwrap();
            }
        });
    }

    #[test]
    fn rejects_a_gain_of_the_wrong_width() {
        with_gpu("rmsnorm shapes", |gpu| {
            let x = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            let w = GpuTensor::zeros(gpu, &[4]).unwrap();
            let y = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            assert!(rmsnorm(gpu, &x, &w, 1e-5, &y).is_err());
        });
    }
}
