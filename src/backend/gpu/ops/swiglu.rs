//! The SwiGLU gate `act = silu(gate) * up` over fused `[M, 2I]` gate/up rows, as the CPU
//! `swiglu`.

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    i: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "swiglu";

/// `gate_up` `[M, 2I]` -> `act` `[M, I]`.
pub fn swiglu(gpu: &Gpu, gate_up: &GpuTensor, act: &GpuTensor) -> GpuResult<()> {
    let i = act.cols();
    let rows = act.rows();
    if i == 0 || gate_up.cols() != 2 * i || gate_up.rows() != rows {
        return Err(GpuError::shape(
            OP,
            format!(
                "gate_up {:?} is not [M, 2I] for act {:?}",
                gate_up.shape(),
                act.shape()
            ),
        ));
    }
    u32_of(OP, "gate_up", gate_up.numel())?;
    let p = Params {
        rows: rows as u32,
        i: i as u32,
        _pad: [0; 2],
    };
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::Swiglu,
        entry: "swiglu",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[gate_up.single(OP, "gate_up")?, act.single(OP, "act")?],
        bytemuck::bytes_of(&p),
        groups(rows * i, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::swiglu::swiglu as cpu_swiglu;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;

    #[test]
    fn matches_cpu_and_stays_finite_at_extremes() {
        with_gpu("swiglu", |gpu| {
            let mut rng = Rng::new(31);
            for &(m, i, scale) in &[(1, 1, 1.0), (21, 77, 8.0), (3, 1537, 1.0), (2, 5, 1e30)] {
                let gu = rng.vec(m * 2 * i, scale);
                let mut want = vec![0.0; m * i];
                cpu_swiglu(&gu, &mut want, i);
                let g = GpuTensor::upload(gpu, &[m, 2 * i], &gu).unwrap();
                let a = GpuTensor::zeros(gpu, &[m, i]).unwrap();
                swiglu(gpu, &g, &a).unwrap();
                let got = a.download(gpu).unwrap();
                if scale > 1e20 {
                    // Products of 1e30-sized values overflow: both sides must give the same
                    // infinities and zeros, and no NaN (an exp overflow inside silu).
                    for (p, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(g == w || (g - w).abs() <= 1e-6 * w.abs(), "{p}: {g} vs {w}");
                    }
                    continue;
                }
                tol::EXP
                    .check(&format!("swiglu {m}x{i}"), &got, &want)
                    .unwrap();
            }
        });
    }
}
