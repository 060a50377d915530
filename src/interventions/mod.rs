//! Interventions applied to checkpoints: compression (quantisation, pruning) first.

pub mod compress;
