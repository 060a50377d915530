//! The one capability multiple-choice scoring needs from a forward pass: each sequence's
//! last-position logits. The CPU `Llama` and the GPU backend's `GpuLlama` both provide it, so
//! `eval --task mc` runs on either device with the same scoring code.

use crate::error::{Error, Result};

use super::forward::Logits;
use super::hooks::Hooks;
use super::weights::Llama;

pub trait LastLogits {
    /// Row `b` holds the logits `[V]` at the last position of `batch[b]` (each non-empty).
    fn last_logits(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>>;
}

impl LastLogits for Llama {
    fn last_logits(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let fwd = self.forward(batch, Logits::Last, &Hooks::default())?;
        batch
            .iter()
            .enumerate()
            .map(|(b, s)| {
                let pos = s.len().checked_sub(1).ok_or_else(empty)?;
                fwd.logits_at(b, pos).map(<[f32]>::to_vec).ok_or_else(empty)
            })
            .collect()
    }
}

#[cfg(feature = "gpu")]
impl LastLogits for super::GpuLlama<'_> {
    fn last_logits(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let (logits, rows) = self.logits(batch, Logits::Last)?;
        let v = logits.shape().last().copied().unwrap_or(0);
        if rows.len() != batch.len() || logits.data().len() != rows.len() * v {
            return Err(empty());
        }
        Ok(logits.data().chunks_exact(v).map(<[f32]>::to_vec).collect())
    }
}

fn empty() -> Error {
    Error::Check("last-position logits: a sequence produced no logits row".into())
}
