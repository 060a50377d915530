//! SwiGLU backward, as the CPU `train::swiglu::swiglu_backward`: writes `d_gate_up`
//! (`[M, 2I]`, rows `[gate | up]`) from `d_act` (`[M, I]`) and the forward's `gate_up`.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
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

const OP: &str = "swiglu_backward";

pub fn swiglu_backward(
    gpu: &Gpu,
    d_act: &GpuTensor,
    gate_up: &GpuTensor,
    d_gate_up: &GpuTensor,
) -> GpuResult<()> {
    let i = d_act.cols();
    let rows = d_act.rows();
    if i == 0 || gate_up.cols() != 2 * i || gate_up.rows() != rows {
        return Err(GpuError::shape(
            OP,
            format!(
                "gate_up {:?} is not [rows, 2 * I] for d_act {:?}",
                gate_up.shape(),
                d_act.shape()
            ),
        ));
    }
    expect_len(OP, "d_gate_up", d_gate_up.numel(), gate_up.numel())?;
    u32_of(OP, "gate_up", gate_up.numel())?;
    let p = Params {
        rows: rows as u32,
        i: i as u32,
        _pad: [0; 2],
    };
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::SwigluBackward,
        entry: "swiglu_backward",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[
            d_act.single(OP, "d_act")?,
            gate_up.single(OP, "gate_up")?,
            d_gate_up.single(OP, "d_gate_up")?,
        ],
        bytemuck::bytes_of(&p),
        groups(rows * i, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::train::swiglu::swiglu_backward as cpu_backward;

    #[test]
    fn matches_cpu_backward_including_extreme_gates() {
        with_gpu("swiglu backward", |gpu| {
            let mut rng = Rng::new(131);
            for &(rows, i, scale) in &[(1, 1, 1.0), (7, 13, 4.0), (33, 1536, 8.0), (5, 77, 60.0)] {
                let mut gu = rng.vec(rows * 2 * i, scale);
                if rows * i > 4 {
                    // Saturated gates on both sides.
                    gu[0] = -1e30;
                    gu[1] = 1e30;
                    gu[2] = -90.0;
                }
                let da = rng.vec(rows * i, 1.0);
                let mut want = vec![0.0; gu.len()];
                cpu_backward(&da, &gu, &mut want, i);
                let gda = GpuTensor::upload(gpu, &[rows, i], &da).unwrap();
                let ggu = GpuTensor::upload(gpu, &[rows, 2 * i], &gu).unwrap();
                let out = GpuTensor::zeros(gpu, &[rows, 2 * i]).unwrap();
                swiglu_backward(gpu, &gda, &ggu, &out).unwrap();
                tol::EXP
                    .check(
                        &format!("swiglu backward {rows}x{i} scale {scale}"),
                        &out.download(gpu).unwrap(),
                        &want,
                    )
                    .unwrap();
            }
        });
    }

    #[test]
    fn rejects_mismatched_widths() {
        with_gpu("swiglu backward shapes", |gpu| {
            let z = |s: &[usize]| GpuTensor::zeros(gpu, s).unwrap();
            assert!(swiglu_backward(gpu, &z(&[2, 3]), &z(&[2, 5]), &z(&[2, 6])).is_err());
            assert!(swiglu_backward(gpu, &z(&[2, 3]), &z(&[2, 6]), &z(&[2, 5])).is_err());
        });
    }
}
