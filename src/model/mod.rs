//! The Llama family: configuration, weights, and the forward pass with the hooks interventions
//! need (capture the inputs of named linears, add a delta at a layer and position, stop early),
//! batched scoring, per-position NLLs, and greedy generation with a KV cache.
//!
//! Layout conventions follow Hugging Face: weights `[out, in]`, `rotate_half` rope on HF-layout
//! q/k rows, tensor and module names as in `LlamaForCausalLM`.

mod block;
mod config;
mod forward;
mod generate;
#[cfg(feature = "gpu")]
mod gpu_forward;
#[cfg(feature = "gpu")]
mod gpu_layer;
mod hooks;
mod last_logits;
mod layer_forward;
mod linear;
pub mod names;
mod nll;
mod prefix;
mod weights;

pub use config::{Llama3RopeScaling, LlamaConfig};
pub use forward::{ForwardOutput, Logits};
pub use generate::Decoder;
#[cfg(feature = "gpu")]
pub use gpu_forward::GpuLlama;
#[cfg(feature = "gpu")]
pub use gpu_layer::{GpuLayer, GpuRows, Tap};
pub use hooks::{Captures, Delta, DeltaSite, Hooks};
pub use last_logits::LastLogits;
pub use layer_forward::{embed_from_checkpoint, DecoderLayer, LayerContext};
pub use prefix::{PrefixCache, PrefixKv};
pub use weights::Llama;
