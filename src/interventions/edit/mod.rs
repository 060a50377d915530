//! Knowledge editing: in-memory methods that change a few tensors of a loaded model so it
//! answers edit requests with their new targets; the CLI writes the result with `write_changed`.

pub mod ft;
pub mod lora;
pub mod targets;
