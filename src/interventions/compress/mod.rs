//! Per-layer compression solvers, independent of the model: each works on one linear layer's
//! weight `W [out, in]` (row-major f32) plus its calibration statistics.
//!
//! Algorithms and the reference code each one follows (see `shared/reference/algorithms.md`
//! sections 2-5 and 13):
//! * [`rtn`]: round-to-nearest on the shared grid of [`quant`] (GPTQ's `Quantizer`, AWQ's
//!   `pseudo_quantize_tensor`).
//! * [`gptq`]: GPTQ `fasterquant` (Frantar et al., ICLR 2023; IST-DASLab/gptq).
//! * [`sparsegpt`]: SparseGPT `fasterprune` (Frantar & Alistarh, ICML 2023; IST-DASLab/sparsegpt).
//! * [`wanda`]: Wanda (Sun et al., ICLR 2024; locuslab/wanda `prune_wanda`).
//! * [`magnitude`]: the magnitude baseline of locuslab/wanda `prune_magnitude`.
//! * [`awq_search`]: AWQ's scale and clip searches (Lin et al., MLSys 2024; mit-han-lab/llm-awq).
//! * [`hessian`]: GPTQ's `add_batch` Hessian, dead columns, damping, inverse Cholesky factor.
//! * [`mask`]: N:M, per-row and per-layer mask selection shared by the pruners.
//!
//! Every entry point validates its inputs and returns `Error::Usage` (bad settings) or
//! `Error::Tensor` (bad shapes, non-finite values) naming the tensor; none panics on user input.

pub mod apply;
pub mod awq;
pub mod awq_search;
pub mod calib;
pub mod device;
pub mod gptq;
#[cfg(feature = "gpu")]
pub mod gpu_walk;
pub mod hessian;
pub mod magnitude;
pub mod mask;
pub mod pipeline;
pub mod plan;
pub mod quant;
pub mod report;
pub mod rtn;
pub mod solve;
pub mod sparsegpt;
pub mod wanda;

use crate::backend::Tensor;
use crate::error::{Error, Result};

/// The path shown in `Error::Tensor` for in-memory layer tensors (they have no file).
pub(crate) const IN_MEMORY: &str = "<layer>";

pub(crate) fn tensor_err(name: &str, msg: impl Into<String>) -> Error {
    Error::tensor(IN_MEMORY, name, msg)
}

/// Checks that `t` is a finite 2-D matrix and returns `(rows, cols)`.
pub(crate) fn check_matrix(name: &str, t: &Tensor) -> Result<(usize, usize)> {
    let shape = t.shape();
    if shape.len() != 2 {
        return Err(tensor_err(
            name,
            format!("expected a 2-D [out, in] matrix, got shape {shape:?}"),
        ));
    }
    if shape[0] == 0 || shape[1] == 0 {
        return Err(tensor_err(name, format!("empty matrix, shape {shape:?}")));
    }
    check_finite(name, t.data())?;
    Ok((shape[0], shape[1]))
}

/// Fails on the first NaN or infinity, naming its flat index.
pub(crate) fn check_finite<T: Copy + Into<f64>>(name: &str, data: &[T]) -> Result<()> {
    if let Some(i) = data.iter().position(|&v| !v.into().is_finite()) {
        let v: f64 = data[i].into();
        return Err(tensor_err(
            name,
            format!("non-finite value {v} at flat index {i}"),
        ));
    }
    Ok(())
}

/// A test-only deterministic generator (splitmix64), so unit tests need no `rand` dependency.
#[cfg(test)]
pub(crate) struct TestRng(u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn new(seed: u64) -> Self {
        TestRng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// Roughly normal (sum of uniforms), enough for test matrices.
    pub(crate) fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866
    }
    pub(crate) fn matrix(&mut self, rows: usize, cols: usize) -> Tensor {
        let data = (0..rows * cols).map(|_| self.normal()).collect();
        Tensor::new(vec![rows, cols], data).unwrap()
    }
}
