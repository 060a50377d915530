//! Edit requests as token sequences and loss targets, shared by the optimiser-based editors
//! (FT, LoRA).
//!
//! Tokenisation is `eval --task edit`'s (`eval::edit::Rules`), so the ids a method trains on are
//! the ids the evaluation scores: the prompt is `enc(prompt)` with special tokens (bos first), the
//! target `T` is `enc(" " + target_new)` with special tokens, cut to `max_length` ids, eos and
//! bos removed. EasyEdit prepends the same space (`" " + target_new`) and tokenises prompt and
//! target apart for FT; its LoRA tokenises `f"{prompt} {target}"` whole, which on a BPE
//! vocabulary can merge differently at the seam; we keep one rule for both and for evaluation.
//! EasyEdit's `prompt_last` also scores the tokenizer's bos id inside `T` (it calls `tok(tgt)`
//! with special tokens); we do not, since bos is never a target answer.

use crate::backend::cpu::softmax::logsumexp;
use crate::data::EditRequest;
use crate::error::{Error, Result};
use crate::eval::edit::Rules;
use crate::model::{Hooks, Llama, Logits};
use crate::tokenizer::Tokenizer;
use crate::train::Target;

/// One request as token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditExample {
    /// 1-based line of the request in its file (0 for examples built from ids directly).
    pub line: usize,
    pub prompt: Vec<u32>,
    pub target: Vec<u32>,
}

impl EditExample {
    /// `prompt ++ target`: the teacher-forced sequence.
    pub fn full(&self) -> Vec<u32> {
        [self.prompt.as_slice(), self.target.as_slice()].concat()
    }
}

/// Tokenises `requests` as the edit evaluation does; `max_length` caps the target (the study's
/// 30). A target that is blank, or that encodes to no ids once bos/eos are removed, is refused
/// with the request's line.
pub fn tokenize(
    tok: &Tokenizer,
    model: &Llama,
    requests: &[EditRequest],
    max_length: usize,
    path: &std::path::Path,
) -> Result<Vec<EditExample>> {
    let rules = Rules::new(tok, model, max_length)?;
    let err = |line: usize, field: &str, msg: String| {
        Error::format(
            "edit requests",
            path,
            format!("line {line} field `{field}`"),
            msg,
        )
    };
    requests
        .iter()
        .map(|r| {
            if r.target_new.trim().is_empty() {
                return Err(err(
                    r.line,
                    "target_new",
                    format!("empty target {:?}: nothing to train towards", r.target_new),
                ));
            }
            let target = rules.target(&r.target_new)?;
            if target.is_empty() {
                return Err(err(
                    r.line,
                    "target_new",
                    format!("the target {:?} encodes to no tokens", r.target_new),
                ));
            }
            let prompt = rules.prompt(&r.prompt).map_err(|_| {
                err(
                    r.line,
                    "prompt",
                    format!("the prompt {:?} encodes to no tokens", r.prompt),
                )
            })?;
            Ok(EditExample {
                line: r.line,
                prompt,
                target,
            })
        })
        .collect()
}

/// Checks examples given as ids (library callers): non-empty prompt and target.
pub fn check_examples(examples: &[EditExample]) -> Result<()> {
    if examples.is_empty() {
        return Err(Error::usage("--requests", "no edit requests selected"));
    }
    for (i, e) in examples.iter().enumerate() {
        if e.prompt.is_empty() || e.target.is_empty() {
            return Err(Error::usage(
                "--requests",
                format!(
                    "request {i} (line {}): empty prompt or target token list",
                    e.line
                ),
            ));
        }
    }
    Ok(())
}

/// How the loss reads the targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetLoss {
    /// EasyEdit FT `prompt_last` (FT-L): every target token scored at the last prompt position
    /// (`-mean_t log p(T_t | prompt)`), averaged over the batch.
    PromptLast,
    /// EasyEdit FT `target_new` (FT-M): teacher-forced cross-entropy of `T` after the prompt,
    /// averaged per example, then over the batch.
    PerExampleMean,
    /// Hugging Face's causal-LM loss with the prompt masked (EasyEdit LoRA): teacher-forced
    /// cross-entropy averaged over every target token of the batch together.
    TokenMean,
}

impl TargetLoss {
    pub fn name(self) -> &'static str {
        match self {
            TargetLoss::PromptLast => "prompt_last",
            TargetLoss::PerExampleMean => "target_new",
            TargetLoss::TokenMean => "target_token_mean",
        }
    }
}

/// The token sequences of a batch and the cross-entropy targets of `loss` on them (weights
/// sum to 1, so the loss is the mean the reference reports).
pub fn batch_targets(batch: &[EditExample], loss: TargetLoss) -> (Vec<Vec<u32>>, Vec<Target>) {
    let n = batch.len().max(1) as f32;
    let total: usize = batch.iter().map(|e| e.target.len()).sum();
    let mut seqs = Vec::with_capacity(batch.len());
    let mut targets = Vec::new();
    for (seq, e) in batch.iter().enumerate() {
        let plen = e.prompt.len();
        let tlen = e.target.len().max(1) as f32;
        match loss {
            TargetLoss::PromptLast => {
                // Only the prompt is fed: the reference runs the model on the prompt alone.
                seqs.push(e.prompt.clone());
                for &t in &e.target {
                    targets.push(Target {
                        seq,
                        pos: plen - 1,
                        token: t,
                        weight: 1.0 / (tlen * n),
                    });
                }
            }
            TargetLoss::PerExampleMean | TargetLoss::TokenMean => {
                seqs.push(e.full());
                let w = match loss {
                    TargetLoss::PerExampleMean => 1.0 / (tlen * n),
                    _ => 1.0 / total.max(1) as f32,
                };
                for (i, &t) in e.target.iter().enumerate() {
                    // Target token i is predicted from the position before it.
                    targets.push(Target {
                        seq,
                        pos: plen + i - 1,
                        token: t,
                        weight: w,
                    });
                }
            }
        }
    }
    (seqs, targets)
}

/// The loss `batch_targets` defines, computed with the inference forward (not the training
/// engine), in f64: the before/after figures of a run, and an independent check of the
/// engine's own loss. Sequences go `chunk` at a time.
pub fn eval_loss(
    model: &Llama,
    examples: &[EditExample],
    loss: TargetLoss,
    chunk: usize,
) -> Result<f64> {
    let (seqs, targets) = batch_targets(examples, loss);
    let mut total = 0.0f64;
    let chunk = chunk.max(1);
    for (c, group) in seqs.chunks(chunk).enumerate() {
        let fwd = model.forward(group, Logits::All, &Hooks::default())?;
        for t in targets.iter().filter(|t| t.seq / chunk == c) {
            let row = fwd
                .logits_at(t.seq % chunk, t.pos)
                .ok_or_else(|| Error::Check("edit loss: missing logits".into()))?;
            let logit = row.get(t.token as usize).ok_or_else(|| {
                Error::usage(
                    "--requests",
                    format!("target token {} is outside the vocabulary", t.token),
                )
            })?;
            let lp = f64::from(*logit) - f64::from(logsumexp(row));
            total -= f64::from(t.weight) * lp;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[u32], t: &[u32]) -> EditExample {
        EditExample {
            line: 0,
            prompt: p.to_vec(),
            target: t.to_vec(),
        }
    }

    #[test]
    fn target_positions_and_weights() {
        let b = [ex(&[1, 5, 6], &[7, 8]), ex(&[1, 9], &[10, 11, 12, 13])];
        let (s, t) = batch_targets(&b, TargetLoss::PromptLast);
        assert_eq!(s, vec![vec![1, 5, 6], vec![1, 9]]);
        assert_eq!(
            t.iter()
                .map(|x| (x.seq, x.pos, x.token))
                .collect::<Vec<_>>(),
            vec![
                (0, 2, 7),
                (0, 2, 8),
                (1, 1, 10),
                (1, 1, 11),
                (1, 1, 12),
                (1, 1, 13)
            ]
        );
        assert_eq!(t[0].weight, 0.25);
        assert_eq!(t[2].weight, 0.125);
        let (s, t) = batch_targets(&b, TargetLoss::PerExampleMean);
        assert_eq!(s[1], vec![1, 9, 10, 11, 12, 13]);
        assert_eq!(
            t.iter()
                .map(|x| (x.seq, x.pos, x.token))
                .collect::<Vec<_>>(),
            vec![
                (0, 2, 7),
                (0, 3, 8),
                (1, 1, 10),
                (1, 2, 11),
                (1, 3, 12),
                (1, 4, 13)
            ]
        );
        assert_eq!((t[0].weight, t[2].weight), (0.25, 0.125));
        let (_, t) = batch_targets(&b, TargetLoss::TokenMean);
        assert!(t.iter().all(|x| (x.weight - 1.0 / 6.0).abs() < 1e-9));
        let sum: f32 = t.iter().map(|x| x.weight).sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }

    #[test]
    fn empty_examples_are_refused() {
        assert!(check_examples(&[]).is_err());
        assert!(check_examples(&[ex(&[1], &[])]).is_err());
        assert!(check_examples(&[ex(&[], &[3])]).is_err());
        assert!(check_examples(&[ex(&[1], &[3])]).is_ok());
    }
}
