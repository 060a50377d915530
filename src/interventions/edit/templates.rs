//! Context templates: `"{}"` plus prefixes the model writes itself, so that keys and values
//! are averaged over contexts the subject may appear in (ROME/MEMIT `get_context_templates`).
//!
//! Reference (EasyEdit, the Llama settings we follow; `util/generate.py::generate_fast`):
//! for each `(length, n_gen)` group, `n_gen / 5` samples from each of the prompts "The",
//! "Therefore", "Because", "I", "You", top-k = 5 sampling, `length` tokens in all (the prompt
//! counts); the text is decoded whole (prompt included), "\n\n" replaced by a space, and
//! becomes `text + ". {}"`. ROME uses groups `[[5, 10], [10, 10]]` (21 templates), MEMIT
//! `[[10, 5]]` (6, kept as two groups `[["{}"], [5 prefixed]]` for its key averaging).
//!
//! Sampling draws from [`SplitMix64`] seeded with `--seed` (the reference is unseeded), so a
//! run is reproducible; braces are replaced by spaces as MEMIT does, so a generated `{` can
//! never be taken for the placeholder. The reference also NFKD-normalises; we keep the text
//! as decoded.

use crate::data::rng::SplitMix64;
use crate::error::{Error, Result};
use crate::model::{Decoder, Llama};
use crate::tokenizer::Tokenizer;

/// The prompts the reference samples prefixes from.
pub const STARTS: [&str; 5] = ["The", "Therefore", "Because", "I", "You"];
/// ROME's `context_template_length_params`.
pub const ROME_GROUPS: [(usize, usize); 2] = [(5, 10), (10, 10)];
/// MEMIT's.
pub const MEMIT_GROUPS: [(usize, usize); 1] = [(10, 5)];
/// Top-k of `generate_fast`.
pub const TOP_K: usize = 5;

/// Template groups: `groups[0] == ["{}"]`, then one group per `(length, n_gen)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Templates {
    pub groups: Vec<Vec<String>>,
}

impl Templates {
    /// The plain template only (no generated context).
    pub fn plain() -> Self {
        Templates {
            groups: vec![vec!["{}".to_string()]],
        }
    }

    /// Fixed templates (tests, or a reproduction with given prefixes).
    pub fn fixed(groups: Vec<Vec<String>>) -> Result<Self> {
        for t in groups.iter().flatten() {
            if t.matches("{}").count() != 1 {
                return Err(Error::usage(
                    "context template",
                    format!("{t:?} must hold exactly one `{{}}`"),
                ));
            }
        }
        if groups.iter().any(Vec::is_empty) || groups.is_empty() {
            return Err(Error::usage("context template", "an empty group"));
        }
        Ok(Templates { groups })
    }

    /// Generates the groups `length_params` with the model, seeded.
    pub fn generate(
        model: &Llama,
        tok: &Tokenizer,
        length_params: &[(usize, usize)],
        seed: u64,
    ) -> Result<Self> {
        let mut rng = SplitMix64::new(seed);
        let mut groups = vec![vec!["{}".to_string()]];
        for &(length, n_gen) in length_params {
            let mut g = Vec::new();
            for start in STARTS {
                for _ in 0..n_gen / STARTS.len() {
                    let text = sample_text(model, tok, start, length, &mut rng)?;
                    g.push(format!("{text}. {{}}"));
                }
            }
            groups.push(g);
        }
        Ok(Templates { groups })
    }

    pub fn flat(&self) -> Vec<&str> {
        self.groups.iter().flatten().map(String::as_str).collect()
    }
}

/// `start` continued by top-k sampling to `length` tokens in all, decoded whole.
fn sample_text(
    model: &Llama,
    tok: &Tokenizer,
    start: &str,
    length: usize,
    rng: &mut SplitMix64,
) -> Result<String> {
    let mut ids = tok.encode(start, true)?;
    if ids.is_empty() {
        return Err(Error::usage(
            "context template",
            "start prompt encodes to nothing",
        ));
    }
    let mut dec = Decoder::new(model, length.max(ids.len()));
    let mut logits = dec.feed(&ids)?.to_vec();
    while ids.len() < length {
        let next = sample_top_k(&logits, TOP_K, rng);
        ids.push(next);
        if ids.len() < length {
            logits = dec.feed(&[next])?.to_vec();
        }
    }
    let text = tok.decode(&ids, true)?;
    Ok(text.replace("\n\n", " ").replace(['{', '}'], " "))
}

/// Samples from the softmax of the `k` largest logits (ties to the lower id, as `torch.topk`
/// on CPU returns them in order), with one uniform draw.
pub fn sample_top_k(logits: &[f32], k: usize, rng: &mut SplitMix64) -> u32 {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.truncate(k.max(1));
    let m = logits[idx[0]];
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| f64::from(logits[i] - m).exp())
        .collect();
    let total: f64 = w.iter().sum();
    // 53 random bits -> [0, 1).
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut acc = 0.0;
    for (&i, &wi) in idx.iter().zip(&w) {
        acc += wi;
        if u < acc {
            return i as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_sampling_stays_in_the_top_k_and_follows_the_softmax() {
        let logits = [0.0f32, 3.0, 1.0, 2.5, -1.0, 2.9];
        let mut rng = SplitMix64::new(4);
        let mut counts = [0usize; 6];
        let n = 20000;
        for _ in 0..n {
            counts[sample_top_k(&logits, 3, &mut rng) as usize] += 1;
        }
        // Only ids 1, 5, 3 (the three largest) are drawn.
        assert_eq!(counts[0] + counts[2] + counts[4], 0);
        let z: f64 = [3.0f64, 2.9, 2.5].iter().map(|v| v.exp()).sum();
        for (i, l) in [(1usize, 3.0f64), (5, 2.9), (3, 2.5)] {
            let p = l.exp() / z;
            let f = counts[i] as f64 / n as f64;
            // Binomial standard error at n = 20000 is under 0.0036; 0.015 is > 4 sigma.
            assert!((f - p).abs() < 0.015, "id {i}: {f} vs {p}");
        }
    }

    #[test]
    fn fixed_templates_need_one_placeholder() {
        assert!(Templates::fixed(vec![vec!["{}".into()], vec!["a. {}".into()]]).is_ok());
        assert!(Templates::fixed(vec![vec!["no slot".into()]]).is_err());
        assert!(Templates::fixed(vec![vec!["{} {}".into()]]).is_err());
        assert!(Templates::fixed(vec![vec![]]).is_err());
    }
}
