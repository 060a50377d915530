//! Gradient ascent: the gradient-difference core with no retain term, and the study's
//! default trainable range (the upper half of the decoder layers).

use std::ops::Range;

use serde_json::Value;

use super::corpus::TokenCorpus;
use super::gd::{gradient_difference, GdSettings};
use super::Outcome;
use crate::error::Result;
use crate::model::Llama;

/// The upper half of `n` decoder layers (the study trains layers 16-31 of 32).
pub fn upper_half(n: usize) -> Range<usize> {
    n / 2..n
}

/// Runs GA: `s.retain_weight` must be `None`.
pub fn gradient_ascent(
    model: &mut Llama,
    forget: &[TokenCorpus],
    s: &GdSettings,
    progress: impl FnMut(&Value),
) -> Result<Outcome> {
    debug_assert!(s.retain_weight.is_none());
    gradient_difference(model, forget, &[], s, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_half_matches_the_study() {
        assert_eq!(upper_half(32), 16..32);
        assert_eq!(upper_half(30), 15..30);
        assert_eq!(upper_half(2), 1..2);
    }
}
