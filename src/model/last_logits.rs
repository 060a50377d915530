//! The one capability multiple-choice scoring needs from a forward pass: each sequence's
//! last-position logits. The CPU `Llama` and the GPU backend's `GpuLlama` both provide it, so
//! `eval --task mc` runs on either device with the same scoring code.

use crate::error::{Error, Result};

use super::prefix::{PrefixCache, PrefixKv};
use super::weights::Llama;

pub trait LastLogits {
    /// Row `b` holds the logits `[V]` at the last position of `batch[b]` (each non-empty).
    fn last_logits(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>>;

    /// `last_logits`, where the first `shared[b]` tokens of `batch[b]` also open other
    /// sequences (a task description): a backend may run each such opening once and keep its
    /// keys and values in `cache`. By default the whole sequences are scored.
    fn last_logits_shared(
        &self,
        batch: &[&[u32]],
        shared: &[usize],
        cache: &mut PrefixCache,
    ) -> Result<Vec<Vec<f32>>> {
        let _ = (shared, cache);
        self.last_logits(batch)
    }

    /// Before `last_logits_shared` runs over `batch` in parts: a backend may compute the
    /// shared openings of all of it at once, which batches far better than one part's few.
    fn warm_shared(
        &self,
        batch: &[&[u32]],
        shared: &[usize],
        cache: &mut PrefixCache,
    ) -> Result<()> {
        let _ = (batch, shared, cache);
        Ok(())
    }
}

impl LastLogits for Llama {
    fn last_logits(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        // Nothing shared: every sequence is scored whole on the same path.
        let nothing = vec![0; batch.len()];
        self.last_logits_shared(batch, &nothing, &mut PrefixCache::default())
    }

    fn last_logits_shared(
        &self,
        batch: &[&[u32]],
        shared: &[usize],
        cache: &mut PrefixCache,
    ) -> Result<Vec<Vec<f32>>> {
        let keys = shared_keys(batch, shared)?;
        cache.ensure(self, &keys)?;
        let none = PrefixKv::none(self.config().num_hidden_layers);
        let items: Vec<(&PrefixKv, &[u32])> = batch
            .iter()
            .zip(&keys)
            .map(|(s, k)| match cache.get(k) {
                Some(pre) => (pre, &s[k.len()..]),
                None => (&none, *s),
            })
            .collect();
        self.last_logits_after(&items)
    }

    fn warm_shared(
        &self,
        batch: &[&[u32]],
        shared: &[usize],
        cache: &mut PrefixCache,
    ) -> Result<()> {
        cache.warm(self, &shared_keys(batch, shared)?)
    }
}

/// The opening of each sequence to share: its first `shared[b]` tokens, but never the last
/// token, whose row gives the logits.
fn shared_keys<'a>(batch: &[&'a [u32]], shared: &[usize]) -> Result<Vec<&'a [u32]>> {
    if shared.len() != batch.len() {
        return Err(Error::Check(format!(
            "last-position logits: {} shared lengths for {} sequences",
            shared.len(),
            batch.len()
        )));
    }
    Ok(batch
        .iter()
        .zip(shared)
        .map(|(s, &n)| &s[..n.min(s.len().saturating_sub(1))])
        .collect())
}

#[cfg(feature = "gpu")]
impl LastLogits for super::GpuLlama<'_> {
    fn last_logits(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let (logits, rows) = self.logits(batch, super::forward::Logits::Last)?;
        let v = logits.shape().last().copied().unwrap_or(0);
        if rows.len() != batch.len() || logits.data().len() != rows.len() * v {
            return Err(empty());
        }
        Ok(logits.data().chunks_exact(v).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(feature = "gpu")]
fn empty() -> Error {
    Error::Check("last-position logits: a sequence produced no logits row".into())
}
