//! The Llama family: configuration, weights, and the forward pass with the hooks interventions
//! need (capture the inputs of named linears, add a delta at a layer and position, stop early).

mod config;

pub use config::{Llama3RopeScaling, LlamaConfig};
