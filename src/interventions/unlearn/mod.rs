//! Unlearning: gradient ascent (`ga`), gradient difference (`gd`) and RMU (`rmu`) on an
//! in-memory model, on forget/retain corpora (`corpus`); the CLI writes the changed tensors
//! with `write_changed` and records every setting and corpus hash in the step.

pub mod apply;
pub mod corpus;
pub mod ga;
pub mod gd;
pub mod rmu;

use serde_json::Value;

use crate::error::{Error, Result};

pub use apply::{unlearn_checkpoint, MethodPlan, UnlearnPlan};
pub use corpus::TokenCorpus;
pub use gd::GdSettings;
pub use rmu::RmuSettings;

/// What a run changed and its loss curve (one JSON record per step).
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Hugging Face names of the tensors the optimiser updated.
    pub changed: Vec<String>,
    pub curve: Vec<Value>,
}

fn check_schedule(steps: usize, batch_size: usize, lr: f32) -> Result<()> {
    if steps == 0 {
        return Err(Error::usage("--steps", "must be at least 1"));
    }
    if batch_size == 0 {
        return Err(Error::usage("--batch-size", "must be at least 1"));
    }
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::usage(
            "--lr",
            format!("{lr} must be positive and finite"),
        ));
    }
    Ok(())
}

/// A non-finite loss ends the run with an input error: nothing is written.
fn check_finite(loss: f64, step: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::usage(
            "--lr",
            format!("the loss became {loss} at step {step}; nothing written (lower --lr?)"),
        ))
    }
}
