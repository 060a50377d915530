//! Interventions applied to checkpoints: compression streams block by block; editing and
//! unlearning change an in-memory model and write the changed tensors with `write_changed`.

pub mod compress;
pub mod edit;
pub mod unlearn;
pub mod write_changed;
