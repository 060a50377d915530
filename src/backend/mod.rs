//! Compute backends. `Tensor` is the dense f32 array every op works on; `cpu` holds the
//! reference and fast CPU kernels (the oracle for every other backend).

pub mod cpu;
mod tensor;

pub use tensor::Tensor;
