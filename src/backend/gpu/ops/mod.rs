//! GPU ops, one module per kernel family (its checks, its dispatch and its parity tests
//! against the CPU backend together), each with its shader in `shaders/<family>.wgsl`.
//! Every op checks its operands and returns an error, never panics, on a bad shape.

pub mod attention;
pub mod attention_backward;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod embedding_backward;
pub mod gptq;
pub mod linear_backward;
pub mod mask;
pub mod matmul;
pub mod mse;
pub mod quant;
pub mod reduce;
pub mod rmsnorm;
pub mod rmsnorm_backward;
pub mod rope;
pub mod sparsegpt;
pub mod swiglu;
pub mod swiglu_backward;
pub mod xtx;

use crate::backend::cpu::tolerance::Tolerance;

use super::{GpuError, GpuResult};

/// Parity tolerances, GPU against the CPU backend on the same f32 inputs.
pub mod tol {
    use super::Tolerance;

    /// Data movement and single-rounding elementwise math: the results should be identical up
    /// to the odd last-bit difference of the shader compiler's exp/division.
    pub const EXACTISH: Tolerance = Tolerance {
        abs: 1e-6,
        rel: 1e-6,
    };
    /// Elementwise math through `exp`: Vulkan lets `exp(x)` be off by 3 + 2|x| ULP, so the
    /// relative bound grows with the argument (|x| <= 64 in the tests: ~1.6e-5).
    pub const EXP: Tolerance = Tolerance {
        abs: 1e-6,
        rel: 2e-5,
    };
    /// Products summed over K ~ 100..1000 of O(1) terms in a different order than the CPU's
    /// GEMM: f32 rounding ~ sqrt(K) * 6e-8 * |terms| ~ 1e-5 at K = 1000.
    pub const MATMUL: Tolerance = Tolerance {
        abs: 2e-4,
        rel: 1e-5,
    };
    /// Row reductions in f32 (the CPU sums in f64) and online softmax vs two-pass softmax:
    /// a few f32 roundings per element of O(1) results.
    pub const REDUCTION: Tolerance = Tolerance {
        abs: 1e-5,
        rel: 1e-5,
    };
    /// Backward ops that subtract a reduced term from a product (RMSNorm's dx, attention's
    /// `P (dP - delta)`): the terms are up to ~10x the result and each carries a few f32
    /// roundings plus, for attention, the recomputed (not stored) softmax.
    pub const GRAD: Tolerance = Tolerance {
        abs: 1e-4,
        rel: 1e-4,
    };
}

/// Shorthand for the matrix view `[rows, cols]` of an operand, with its element count checked.
pub(crate) fn expect_len(
    op: &'static str,
    what: &str,
    actual: usize,
    expected: usize,
) -> GpuResult<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(GpuError::shape(
            op,
            format!("{what} has {actual} elements, expected {expected}"),
        ))
    }
}

/// A size as the u32 a shader indexes with; larger sizes are refused, not wrapped.
pub(crate) fn u32_of(op: &'static str, what: &str, v: usize) -> GpuResult<u32> {
    u32::try_from(v).map_err(|_| {
        GpuError::shape(
            op,
            format!("{what} = {v} exceeds the shader's 32-bit indexing"),
        )
    })
}
