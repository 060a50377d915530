//! Training: hand-written backward passes for the Llama family (one op per file, each next
//! to the forward it mirrors, llm.c style), the losses the optimiser-based interventions use
//! (ROME/MEMIT, FT, LoRA, GA/GD, RMU), the trainable-set selection, and `Trainer`, which runs
//! forward and backward with activation checkpointing at layer boundaries.
//!
//! The GPU kernels for these backward ops live in `backend::gpu::ops` (`*_backward`,
//! `cross_entropy`, `mse`), each checked against the CPU function here; `Trainer` runs on the
//! CPU.

pub mod attention;
mod block;
pub mod embedding;
#[cfg(test)]
pub(crate) mod gradcheck;
mod head;
pub mod linear;
pub mod lora;
pub mod loss;
pub mod params;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
mod trainer;

pub use lora::{LoraAdapter, LoraConfig};
pub use loss::{LossTerm, MseTarget, Objective, Target};
pub use params::{ActivationDelta, TrainableSet};
pub use trainer::Trainer;
