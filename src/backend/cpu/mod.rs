//! CPU kernels: the reference implementation of every op and the fast path on machines
//! without a GPU. Multi-threaded through rayon's global pool (its size is what `--threads`
//! sets); matrix products through the `gemm` crate. One op per file, each with a slow naive
//! reference in its tests and a named tolerance from `tolerance`.

pub mod argmax;
pub mod attention;
pub mod embedding;
pub mod exp;
pub mod matmul;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod simd;
pub mod softmax;
pub mod swiglu;
pub mod tolerance;

#[cfg(test)]
pub(crate) mod testutil;
