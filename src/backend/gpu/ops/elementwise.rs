//! Elementwise ops: `y += x` (the residual add).

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "add";

/// `y += x`, elementwise over equal-sized tensors.
pub fn add_assign(gpu: &Gpu, y: &GpuTensor, x: &GpuTensor) -> GpuResult<()> {
    expect_len(OP, "x", x.numel(), y.numel())?;
    let n = y.numel();
    let p = Params {
        n: u32_of(OP, "y", n)?,
        _pad: [0; 3],
    };
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::Elementwise,
        entry: "add",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[x.single(OP, "x")?, y.single(OP, "y")?],
        bytemuck::bytes_of(&p),
        groups(n, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::testutil::with_gpu;

    #[test]
    fn adds_exactly_and_checks_sizes() {
        with_gpu("add", |gpu| {
            let mut rng = Rng::new(41);
            for n in [1, 63, 64, 65, 4099] {
                let a = rng.vec(n, 3.0);
                let b = rng.vec(n, 3.0);
                let ga = GpuTensor::upload(gpu, &[n], &a).unwrap();
                let gb = GpuTensor::upload(gpu, &[n], &b).unwrap();
                add_assign(gpu, &ga, &gb).unwrap();
                let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
                // One f32 addition: bit-identical on any IEEE device.
                assert_eq!(ga.download(gpu).unwrap(), want, "n = {n}");
            }
            let a = GpuTensor::zeros(gpu, &[3]).unwrap();
            let b = GpuTensor::zeros(gpu, &[4]).unwrap();
            assert!(add_assign(gpu, &a, &b).is_err());
        });
    }
}
