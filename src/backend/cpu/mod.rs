//! CPU kernels: the reference implementation of every op and the fast path on machines
//! without a GPU. Multi-threaded through rayon; matrix products through the `gemm` crate.
