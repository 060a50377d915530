//! Per-channel activation statistics for the compression solvers: the column sums of squares
//! of `x` (`[N, C]`, Wanda's `scaler_row` numerator) and the column mean magnitudes (AWQ's
//! `x_mean`).

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "col_stats";

/// Column statistics of a `[N, C]` matrix.
pub struct ColStats {
    /// `[C]`: sum over rows of x^2.
    pub sum_sq: GpuTensor,
    /// `[C]`: mean over rows of |x| (0 for N = 0).
    pub mean_abs: GpuTensor,
}

pub fn col_stats(gpu: &Gpu, x: &GpuTensor) -> GpuResult<ColStats> {
    let (n, c) = (x.rows(), x.cols());
    u32_of(OP, "x", x.numel())?;
    let stats = ColStats {
        sum_sq: GpuTensor::zeros(gpu, &[c])?,
        mean_abs: GpuTensor::zeros(gpu, &[c])?,
    };
    let p = Params {
        rows: n as u32,
        c: c as u32,
        _pad: [0; 2],
    };
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::Reduce,
        entry: "col_stats",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[
            x.single(OP, "x")?,
            stats.sum_sq.single(OP, "sum_sq")?,
            stats.mean_abs.single(OP, "mean_abs")?,
        ],
        bytemuck::bytes_of(&p),
        groups(c, wg),
    )?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::backend::Tensor;
    use crate::interventions::compress::awq_search::act_mean_abs;
    use crate::interventions::compress::wanda::InputNorms;

    #[test]
    fn match_the_wanda_and_awq_statistics() {
        with_gpu("col_stats", |gpu| {
            let mut rng = Rng::new(81);
            for &(n, c) in &[(1, 1), (7, 13), (1031, 67), (64, 577)] {
                let x = Tensor::new(vec![n, c], rng.vec(n * c, 3.0)).unwrap();
                let mut norms = InputNorms::new(c);
                norms.add_batch("x", &x).unwrap();
                // scaler_row divides by the sequence count (1 here): the plain sum of squares.
                let want_sq = norms.scaler_row();
                let want_abs = act_mean_abs("x", &x).unwrap();
                let s = col_stats(gpu, &GpuTensor::from_tensor(gpu, &x).unwrap()).unwrap();
                let what = format!("{n}x{c}");
                tol::REDUCTION
                    .check(
                        &format!("sum_sq {what}"),
                        &s.sum_sq.download(gpu).unwrap(),
                        &want_sq,
                    )
                    .unwrap();
                tol::REDUCTION
                    .check(
                        &format!("mean_abs {what}"),
                        &s.mean_abs.download(gpu).unwrap(),
                        &want_abs,
                    )
                    .unwrap();
            }
        });
    }
}
