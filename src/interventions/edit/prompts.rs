//! Token bookkeeping shared by ROME and MEMIT: where the subject's last token is, the target
//! ids, and the rewriting prompts of `compute_v` / `compute_z`.
//!
//! Reference (`rome/repr_tools.py::get_words_idxs_in_templates`, `compute_v.py`): a template
//! holds `{}` where the subject goes; the lookup index (`fact_token = subject_last`) is the
//! last token of `tok(prefix + subject)`; a rewriting prompt is `context.format(prompt)` plus
//! the decoded target tokens but the last, and its target tokens sit at the last `len(target)`
//! positions. We append the target ids themselves instead of decoding and re-encoding them, so
//! the scored tokens are exactly the target's ids (the reference re-tokenises and assumes the
//! same ids come back).

use crate::data::EditRequest;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// A prompt with the subject filled in, and the position of the subject's last token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedPrompt {
    pub tokens: Vec<u32>,
    pub subject_last: usize,
}

/// A request as the editors use it: the prompt split around the subject (first occurrence,
/// as `EditRequest::template`) and the target ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedRequest {
    /// 1-based line in the requests file (for error messages and reports).
    pub line: usize,
    pub prefix: String,
    pub subject: String,
    pub suffix: String,
    /// `tok(" " + target_new)` without special tokens (the reference prepends the space
    /// when missing and drops a leading BOS).
    pub target: Vec<u32>,
}

impl PreparedRequest {
    pub fn new(tok: &Tokenizer, req: &EditRequest) -> Result<Self> {
        let what = format!("request on line {}", req.line);
        let at = req.prompt.find(&req.subject).ok_or_else(|| {
            Error::usage(
                &what,
                format!(
                    "the subject {:?} does not occur in the prompt {:?}",
                    req.subject, req.prompt
                ),
            )
        })?;
        if req.subject.is_empty() {
            return Err(Error::usage(&what, "empty subject"));
        }
        if req.target_new.trim().is_empty() {
            return Err(Error::usage(&what, "empty target_new"));
        }
        let spaced = if req.target_new.starts_with(' ') {
            req.target_new.clone()
        } else {
            format!(" {}", req.target_new)
        };
        let target = tok.encode(&spaced, false)?;
        if target.is_empty() {
            return Err(Error::usage(
                &what,
                format!("target_new {:?} encodes to no tokens", req.target_new),
            ));
        }
        Ok(PreparedRequest {
            line: req.line,
            prefix: req.prompt[..at].to_string(),
            subject: req.subject.clone(),
            suffix: req.prompt[at + req.subject.len()..].to_string(),
            target,
        })
    }

    /// The prompt inside a context template (`"{}"`, `"<generated text>. {}"`).
    pub fn in_context(&self, tok: &Tokenizer, context: &str) -> Result<LocatedPrompt> {
        let (c_pre, c_suf) = split_template(context)?;
        locate(
            tok,
            &format!("{c_pre}{}", self.prefix),
            &self.subject,
            &format!("{}{c_suf}", self.suffix),
        )
    }

    /// The rewriting prompt of one context: the prompt followed by the target ids but the
    /// last; the target is scored at positions `len(prompt) - 1 ..`.
    pub fn rewriting(&self, tok: &Tokenizer, context: &str) -> Result<RewritingPrompt> {
        let mut p = self.in_context(tok, context)?;
        let first_target_pos = p.tokens.len() - 1;
        p.tokens
            .extend_from_slice(&self.target[..self.target.len() - 1]);
        Ok(RewritingPrompt {
            prompt: p,
            first_target_pos,
        })
    }

    /// The essence (KL) prompt: `"{subject} is a"`.
    pub fn kl_prompt(&self, tok: &Tokenizer) -> Result<LocatedPrompt> {
        locate(tok, "", &self.subject, KL_SUFFIX)
    }
}

/// The reference's only KL prompt template is `"{} is a"`.
pub const KL_SUFFIX: &str = " is a";

/// A rewriting prompt: `prompt.tokens[first_target_pos + j]` predicts `target[j]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewritingPrompt {
    pub prompt: LocatedPrompt,
    pub first_target_pos: usize,
}

/// Splits a context template at its `{}`.
pub fn split_template(context: &str) -> Result<(&str, &str)> {
    context.split_once("{}").ok_or_else(|| {
        Error::usage(
            "context template",
            format!("{context:?} has no `{{}}` placeholder"),
        )
    })
}

/// Tokenises `prefix + subject + suffix` (special tokens as the tokenizer adds them) and finds
/// the subject's last token as the last token of `tok(prefix + subject)`.
pub fn locate(tok: &Tokenizer, prefix: &str, subject: &str, suffix: &str) -> Result<LocatedPrompt> {
    let head = tok.encode(&format!("{prefix}{subject}"), true)?;
    let tokens = tok.encode(&format!("{prefix}{subject}{suffix}"), true)?;
    match head.len().checked_sub(1) {
        Some(i) if i < tokens.len() => Ok(LocatedPrompt {
            tokens,
            subject_last: i,
        }),
        _ => Err(Error::usage(
            "prompt",
            format!(
                "cannot locate the subject {subject:?} in {:?}: it encodes to no tokens",
                format!("{prefix}{subject}{suffix}")
            ),
        )),
    }
}
