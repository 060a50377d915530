//! Mean squared error between hidden states and a target, with its gradient, as the CPU
//! `train::loss::mse::mse`: `w * mean((h - t)^2)` over every element of `h` (`[N, C]`), adding
//! `w * 2 (h - t) / (N C)` to `dh`. The target is one `[C]` row for every row of `h`, or
//! `[N, C]`.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    broadcast: u32,
    k: f32,
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "mse";

/// The loss `w * mean((h - target)^2)`, its gradient added to `dh`.
pub fn mse(gpu: &Gpu, h: &GpuTensor, target: &GpuTensor, w: f32, dh: &GpuTensor) -> GpuResult<f64> {
    let (n, c) = (h.rows(), h.cols());
    let broadcast = target.numel() == c && n != 1;
    if !broadcast && target.numel() != n * c {
        return Err(GpuError::shape(
            OP,
            format!(
                "target {:?} is neither [{c}] nor h's {:?}",
                target.shape(),
                h.shape()
            ),
        ));
    }
    expect_len(OP, "dh", dh.numel(), h.numel())?;
    u32_of(OP, "h", h.numel())?;
    if n == 0 || c == 0 {
        return Ok(0.0);
    }
    let numel = h.numel();
    // As the CPU forms it, so both scale the error identically.
    let k = 2.0 * w / numel as f32;
    let sq = GpuTensor::zeros(gpu, &[n])?;
    let p = Params {
        rows: n as u32,
        c: c as u32,
        broadcast: u32::from(broadcast),
        k,
    };
    // The tree reduction halves the workgroup, so its size must be a power of two.
    let wg = gpu.tuning().wg.next_power_of_two().min(256);
    let key = KernelKey {
        shader: Shader::Mse,
        entry: "mse",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[
            h.single(OP, "h")?,
            target.single(OP, "target")?,
            dh.single(OP, "dh")?,
            sq.single(OP, "row sums")?,
        ],
        bytemuck::bytes_of(&p),
        n as u64,
    )?;
    let sum: f64 = sq.download(gpu)?.iter().map(|&s| f64::from(s)).sum();
    Ok(f64::from(w) * sum / numel as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::train::loss::mse::{mse as cpu_mse, MseTarget};

    #[test]
    fn matches_cpu_for_broadcast_and_row_targets() {
        with_gpu("mse", |gpu| {
            let mut rng = Rng::new(171);
            for &(n, c) in &[(1, 1), (3, 5), (37, 577), (129, 13)] {
                let h = rng.vec(n * c, 2.0);
                for broadcast in [true, false] {
                    let t = rng.vec(if broadcast { c } else { n * c }, 2.0);
                    let target = if broadcast {
                        MseTarget::Broadcast(t.clone())
                    } else {
                        MseTarget::Rows(t.clone())
                    };
                    let d0 = rng.vec(n * c, 1.0);
                    let mut want = d0.clone();
                    let want_loss = cpu_mse(&h, c, &target, 0.7, &mut want);
                    let gh = GpuTensor::upload(gpu, &[n, c], &h).unwrap();
                    let tshape = if broadcast { vec![c] } else { vec![n, c] };
                    let gt = GpuTensor::upload(gpu, &tshape, &t).unwrap();
                    let gd = GpuTensor::upload(gpu, &[n, c], &d0).unwrap();
                    let loss = mse(gpu, &gh, &gt, 0.7, &gd).unwrap();
                    let what = format!("mse {n}x{c} broadcast {broadcast}");
                    tol::EXACTISH
                        .check(&format!("{what} dh"), &gd.download(gpu).unwrap(), &want)
                        .unwrap();
                    tol::REDUCTION
                        .check(&format!("{what} loss"), &[loss as f32], &[want_loss as f32])
                        .unwrap();
                }
            }
        });
    }

    #[test]
    fn rejects_a_target_of_another_shape() {
        with_gpu("mse shapes", |gpu| {
            let h = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            let d = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            let t = GpuTensor::zeros(gpu, &[4]).unwrap();
            assert!(mse(gpu, &h, &t, 1.0, &d).is_err());
        });
    }
}
