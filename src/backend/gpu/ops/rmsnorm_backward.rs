//! RMSNorm backward, as the CPU `train::rmsnorm::rmsnorm_backward`: from `dy` (`[M, C]`), the
//! forward's input `x`, gain `w` (`[C]`) and per-row `r = 1/rms` (`[M]`), accumulates
//! `dx += r (dy w) - x r^3 mean(dy w x)` and, if given, `dw += sum_rows dy x r`.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "rmsnorm_backward";

pub fn rmsnorm_backward(
    gpu: &Gpu,
    dy: &GpuTensor,
    x: &GpuTensor,
    w: &GpuTensor,
    r: &GpuTensor,
    dx: &GpuTensor,
    dw: Option<&GpuTensor>,
) -> GpuResult<()> {
    let c = w.numel();
    if c == 0 || x.cols() != c {
        return Err(GpuError::shape(
            OP,
            format!("x {:?} rows are not the gain's {c} channels", x.shape()),
        ));
    }
    let rows = x.rows();
    expect_len(OP, "dy", dy.numel(), x.numel())?;
    expect_len(OP, "dx", dx.numel(), x.numel())?;
    expect_len(OP, "r", r.numel(), rows)?;
    let p = Params {
        rows: u32_of(OP, "rows", rows)?,
        c: u32_of(OP, "channels", c)?,
        _pad: [0; 2],
    };
    u32_of(OP, "x", x.numel())?;
    // The tree reduction halves the workgroup, so its size must be a power of two.
    let wg = gpu.tuning().wg.next_power_of_two().min(256);
    let key = |entry| KernelKey {
        shader: Shader::RmsnormBackward,
        entry,
        subs: vec![("WG", wg)],
    };
    let (dyb, xb, rb) = (dy.single(OP, "dy")?, x.single(OP, "x")?, r.single(OP, "r")?);
    // Both entries read only the inputs, so their order does not matter.
    if let Some(dw) = dw {
        expect_len(OP, "dw", dw.numel(), c)?;
        gpu.launch_bound(
            OP,
            &key("rms_dw"),
            &[(0, dyb), (1, xb), (2, rb), (5, dw.single(OP, "dw")?)],
            6,
            bytemuck::bytes_of(&p),
            groups(c, wg),
        )?;
    }
    gpu.launch_bound(
        OP,
        &key("rms_dx"),
        &[
            (0, dyb),
            (1, xb),
            (2, rb),
            (3, w.single(OP, "w")?),
            (4, dx.single(OP, "dx")?),
        ],
        6,
        bytemuck::bytes_of(&p),
        rows as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::train::rmsnorm::{rmsnorm_backward as cpu_backward, rmsnorm_forward};

    #[test]
    fn matches_cpu_backward() {
        with_gpu("rmsnorm backward", |gpu| {
            let mut rng = Rng::new(121);
            for &(rows, c, scale) in &[
                (1, 1, 1.0),
                (3, 77, 1.0),
                (19, 576, 1.0),
                (2, 1031, 3.0),
                (67, 13, 0.01),
            ] {
                let x = rng.vec(rows * c, scale);
                let w = rng.vec(c, 2.0);
                let dy = rng.vec(rows * c, 1.0);
                let (mut y, mut r) = (vec![0.0; rows * c], vec![0.0; rows]);
                rmsnorm_forward(&x, &w, 1e-5, &mut y, &mut r);
                let (dx0, dw0) = (rng.vec(rows * c, 1.0), rng.vec(c, 1.0));
                let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
                cpu_backward(&dy, &x, &w, &r, &mut dx, Some(&mut dw));
                let up = |s: &[usize], d: &[f32]| GpuTensor::upload(gpu, s, d).unwrap();
                let (gdy, gx, gw, gr) = (
                    up(&[rows, c], &dy),
                    up(&[rows, c], &x),
                    up(&[c], &w),
                    up(&[rows], &r),
                );
                let (gdx, gdw) = (up(&[rows, c], &dx0), up(&[c], &dw0));
                rmsnorm_backward(gpu, &gdy, &gx, &gw, &gr, &gdx, Some(&gdw)).unwrap();
                let what = format!("rmsnorm backward {rows}x{c} scale {scale}");
                tol::GRAD
                    .check(&format!("{what} dx"), &gdx.download(gpu).unwrap(), &dx)
                    .unwrap();
                tol::REDUCTION
                    .check(&format!("{what} dw"), &gdw.download(gpu).unwrap(), &dw)
                    .unwrap();
            }
        });
    }

    #[test]
    fn rejects_wrong_shapes() {
        with_gpu("rmsnorm backward shapes", |gpu| {
            let z = |s: &[usize]| GpuTensor::zeros(gpu, s).unwrap();
            let (x, w) = (z(&[2, 3]), z(&[3]));
            assert!(
                rmsnorm_backward(gpu, &z(&[2, 3]), &x, &z(&[4]), &z(&[2]), &z(&[2, 3]), None)
                    .is_err()
            );
            assert!(
                rmsnorm_backward(gpu, &z(&[2, 3]), &x, &w, &z(&[3]), &z(&[2, 3]), None).is_err()
            );
            assert!(rmsnorm_backward(
                gpu,
                &z(&[2, 3]),
                &x,
                &w,
                &z(&[2]),
                &z(&[2, 3]),
                Some(&z(&[2]))
            )
            .is_err());
        });
    }
}
