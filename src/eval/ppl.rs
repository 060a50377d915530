//! Perplexity on a token stream, as the study's `sparsellm/lib/eval.py::eval_ppl` (GPTQ's
//! `llama_eval`, Wanda's `eval_ppl_wikitext`) computes it: the text is tokenised once, cut into
//! `n = len / seqlen` non-overlapping windows of exactly `seqlen` tokens (the remainder is
//! dropped), each window is scored on its own (no context carried across a boundary, so the
//! first token of every window is never predicted: `seqlen - 1` predictions per window), and
//! `ppl = exp(sum_w mean_w * seqlen / (n * seqlen))`. With equal windows that is
//! `exp(mean NLL over all n * (seqlen - 1) predicted tokens)`, which is what we sum.

use serde_json::json;

use super::{select, Outcome, Progress};
use crate::error::{Error, Result};
use crate::model::Llama;

#[derive(Clone, Debug)]
pub struct PplSettings {
    pub seqlen: usize,
    /// Windows per forward pass (packed; no padding).
    pub batch_size: usize,
    /// First window and most windows to score (the first few windows make a quick check).
    pub offset: usize,
    pub limit: Option<usize>,
}

/// The default window: the model's context, capped at 2048 (the default).
pub fn default_seqlen(model: &Llama) -> usize {
    model.config().max_position_embeddings.clamp(2, 2048)
}

/// The non-overlapping windows of `tokens`; `source` names the data in the error when the text
/// is shorter than one window.
pub fn windows<'t>(tokens: &'t [u32], seqlen: usize, source: &str) -> Result<Vec<&'t [u32]>> {
    if seqlen < 2 {
        return Err(Error::usage(
            "--seqlen",
            "must be at least 2 (a window needs a prediction)",
        ));
    }
    if tokens.len() < seqlen {
        return Err(Error::usage(
            "--data",
            format!(
                "`{source}` is {} tokens long, shorter than one window of --seqlen {seqlen}",
                tokens.len()
            ),
        ));
    }
    Ok(tokens.chunks_exact(seqlen).collect())
}

/// Scores the selected windows and returns the perplexity outcome.
pub fn evaluate(
    model: &Llama,
    tokens: &[u32],
    s: &PplSettings,
    source: &str,
    quiet: bool,
) -> Result<Outcome> {
    if s.seqlen > model.config().max_position_embeddings {
        return Err(Error::usage(
            "--seqlen",
            format!(
                "{} is longer than the model's context of {} positions",
                s.seqlen,
                model.config().max_position_embeddings
            ),
        ));
    }
    let all = windows(tokens, s.seqlen, source)?;
    let range = select(all.len(), s.offset, s.limit, "windows")?;
    let chosen = &all[range.clone()];
    let bar = Progress::new(chosen.len() * s.seqlen, "ppl tokens", quiet);
    let (mut sum, mut count) = (0.0f64, 0usize);
    for batch in chosen.chunks(s.batch_size.max(1)) {
        for nll in model.batch_nll(batch)? {
            sum += nll.iter().map(|&x| f64::from(x)).sum::<f64>();
            count += nll.len();
        }
        bar.inc(batch.len() * s.seqlen);
    }
    bar.finish();
    let mean_nll = sum / count as f64;
    let ppl = mean_nll.exp();
    Ok(Outcome {
        metrics: json!({
            "ppl": ppl,
            "mean_nll": mean_nll,
            "windows": chosen.len(),
            "predicted_tokens": count,
        }),
        settings: json!({
            "seqlen": s.seqlen,
            "offset": s.offset,
            "limit": s.limit,
            "windows_in_text": all.len(),
            "text_tokens": tokens.len(),
        }),
        per_item: serde_json::Value::Null,
        table: vec![
            ("perplexity".into(), format!("{ppl:.4}")),
            ("mean NLL".into(), format!("{mean_nll:.6}")),
            (
                "windows".into(),
                format!("{} of {} (seqlen {})", chosen.len(), all.len(), s.seqlen),
            ),
            ("tokens scored".into(), count.to_string()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_drop_the_remainder_and_refuse_short_text() {
        let t: Vec<u32> = (0..10).collect();
        let w = windows(&t, 4, "x").unwrap();
        assert_eq!(w, vec![&t[0..4], &t[4..8]]);
        let e = windows(&t, 11, "wiki.txt").unwrap_err().to_string();
        assert!(e.contains("wiki.txt") && e.contains("10 tokens"), "{e}");
        assert!(windows(&t, 1, "x").is_err());
    }
}
