//! `intervene`: apply knowledge edits, unlearning and compression to language-model
//! checkpoints, each step recorded in a content-hashed provenance chain.
//! The CLI (`src/main.rs`, `src/cli/`) only parses arguments and calls this library.

pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod interventions;
pub mod linalg;
pub mod model;
pub mod optim;
pub mod score;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
