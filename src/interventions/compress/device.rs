//! Where a compression step computes. On the CPU every part runs on the host; on the GPU the
//! calibration forwards, the Hessian and input-norm statistics, the round-to-nearest and mask
//! kernels and the GPTQ/SparseGPT column sweeps run as shaders (`gpu_walk`), while the
//! Cholesky factors and AWQ stay on the host (see `gpu_walk` for why). The name goes into the step's provenance, so the
//! output id says which backend produced it.

#[cfg(feature = "gpu")]
use crate::backend::gpu::Gpu;

#[derive(Clone, Copy)]
pub enum Device<'g> {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(&'g Gpu),
    /// Keeps the lifetime used in builds without the GPU backend; never constructed.
    #[cfg(not(feature = "gpu"))]
    #[doc(hidden)]
    _Never(std::marker::PhantomData<&'g ()>, std::convert::Infallible),
}

impl Device<'_> {
    /// The backend recorded in provenance: `cpu`, or `gpu:<adapter name>`.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => format!("gpu:{}", g.info().name),
            #[cfg(not(feature = "gpu"))]
            Device::_Never(_, never) => match *never {},
        }
    }
}
