//! Compute backends. `Tensor` is the dense f32 array every op works on; `cpu` holds the
//! reference and fast CPU kernels (the oracle for every other backend); `gpu` (cargo feature
//! `gpu`, on by default) the same ops as wgpu compute shaders.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
mod tensor;

pub use tensor::Tensor;
