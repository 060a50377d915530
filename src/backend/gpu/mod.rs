//! The wgpu backend (issue 3): every engine op as a WGSL compute shader, run on Vulkan, Metal or
//! DX12, checked op by op against the CPU backend (the oracle) on random shapes.
//!
//! `device` picks the adapter and opens the device with the adapter's own limits, `pipeline`
//! caches compiled kernels by (shader, entry, specialisation), `dispatch` turns a workgroup
//! count into a grid that respects the 65,535-per-dimension limit, `buffer` moves tensors to and
//! from the device (splitting those too large for one binding), and `ops` holds one module per
//! op family, each with its shader in `shaders/<family>.wgsl`.

mod buffer;
mod device;
mod dispatch;
pub mod ops;
mod pipeline;
#[cfg(test)]
pub(crate) mod testutil;

pub use buffer::GpuTensor;
pub use device::{AdapterPolicy, Gpu, MatmulTile};
pub use dispatch::{grid, Grid};

/// What can go wrong on the GPU path. Shape errors name the op and the operand, so a caller
/// passing user data learns what was expected.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter fits the policy (no driver, or only software adapters under `RealOnly`).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter exists but the device could not be opened.
    #[error("GPU device `{adapter}`: {msg}")]
    Device { adapter: String, msg: String },
    /// An operand's shape or size does not fit the op.
    #[error("gpu {op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// wgpu reported a validation or out-of-memory error while running `op`.
    #[error("gpu {op}: wgpu error: {msg}")]
    Wgpu { op: &'static str, msg: String },
}

impl GpuError {
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        GpuError::Shape {
            op,
            msg: msg.into(),
        }
    }
}

pub type GpuResult<T> = std::result::Result<T, GpuError>;
