//! Evaluation: the criteria the composability study scores each intervention on (edit success,
//! generalisation and locality; multiple-choice accuracy; perplexity), computed as the study
//! computed them (`../shared/reference/composability.md` §3), and the record of each run in
//! the checkpoint's provenance. One metric family per file; `record.rs` does the bookkeeping.

pub mod edit;
pub mod mc;
pub mod ppl;
mod progress;
pub mod record;

pub use progress::Progress;

use serde_json::Value;

/// What one evaluation produced: the metrics object recorded in provenance and printed by
/// `--json`, the settings that shaped it, and rows for the human table.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub metrics: Value,
    pub settings: Value,
    /// Per-item results (MC choices, edit F1 per prompt): printed under `--json` as
    /// `per_item`, never recorded in provenance (it would grow with every run).
    pub per_item: Value,
    pub table: Vec<(String, String)>,
}

/// The window `[offset, offset + limit)` of `n` items, refusing one that selects nothing.
pub fn select(
    n: usize,
    offset: usize,
    limit: Option<usize>,
    what: &str,
) -> crate::Result<std::ops::Range<usize>> {
    if limit == Some(0) {
        return Err(crate::Error::usage(
            "--limit",
            format!("a limit of 0 selects no {what}"),
        ));
    }
    if offset >= n {
        return Err(crate::Error::usage(
            "--offset",
            format!("offset {offset} is past the end ({n} {what})"),
        ));
    }
    let end = limit.map_or(n, |l| offset.saturating_add(l).min(n));
    Ok(offset..end)
}

/// Mean of `xs`, `None` when empty (a metric over nothing is absent, not zero).
pub(crate) fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}
