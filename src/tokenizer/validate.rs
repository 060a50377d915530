//! Checks on a [`GgufVocab`] before a tokenizer is built from it: the file is untrusted input,
//! so every inconsistency becomes an error naming the GGUF field, never a panic later.

use std::collections::HashMap;
use std::path::Path;

use super::GgufVocab;
use crate::{Error, Result};

const KIND: &str = "GGUF tokenizer";

/// Array lengths agree and special token ids are in range.
pub(crate) fn check_vocab(vocab: &GgufVocab, source: &Path) -> Result<()> {
    let n = vocab.tokens.len();
    if n == 0 {
        return Err(Error::format(
            KIND,
            source,
            "tokenizer.ggml.tokens",
            "is empty",
        ));
    }
    if u32::try_from(n).is_err() {
        let msg = format!("{n} tokens do not fit u32 ids");
        return Err(Error::format(KIND, source, "tokenizer.ggml.tokens", msg));
    }
    for (field, len) in [
        ("tokenizer.ggml.token_type", vocab.token_types.len()),
        ("tokenizer.ggml.scores", vocab.scores.len()),
    ] {
        // Both arrays are optional in GGUF; present, they describe every token.
        if len != 0 && len != n {
            let msg = format!("has {len} entries but tokenizer.ggml.tokens has {n}");
            return Err(Error::format(KIND, source, field, msg));
        }
    }
    for (field, id) in [
        ("tokenizer.ggml.bos_token_id", vocab.bos_id),
        ("tokenizer.ggml.eos_token_id", vocab.eos_id),
        ("tokenizer.ggml.unknown_token_id", vocab.unk_id),
        ("tokenizer.ggml.padding_token_id", vocab.pad_id),
    ] {
        if let Some(id) = id.filter(|&id| id as usize >= n) {
            let msg = format!("id {id} is out of range for {n} tokens");
            return Err(Error::format(KIND, source, field, msg));
        }
    }
    Ok(())
}

/// Token text to id. Two tokens with the same text cannot both be reached, so that is an error.
pub(crate) fn unique_ids<'a>(
    tokens: impl IntoIterator<Item = &'a str>,
    source: &Path,
) -> Result<HashMap<&'a str, u32>> {
    let mut ids = HashMap::new();
    for (i, token) in tokens.into_iter().enumerate() {
        // `check_vocab` bounded the count by u32::MAX.
        if let Some(first) = ids.insert(token, i as u32) {
            let msg = format!("{token:?} repeats token {first}");
            return Err(Error::format(
                KIND,
                source,
                format!("tokenizer.ggml.tokens[{i}]"),
                msg,
            ));
        }
    }
    Ok(ids)
}

/// Parse `tokenizer.ggml.merges`: each entry is two vocabulary entries separated by one space,
/// and their concatenation is a vocabulary entry too (the `tokenizers` crate requires all three).
pub(crate) fn parse_merges(
    merges: &[String],
    ids: &HashMap<&str, u32>,
    source: &Path,
) -> Result<Vec<(String, String)>> {
    let mut parsed = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        let field = || format!("tokenizer.ggml.merges[{i}]");
        let mut parts = merge.split(' ');
        let (left, right) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => (l, r),
            _ => {
                let msg = format!("{merge:?} is not two tokens separated by one space");
                return Err(Error::format(KIND, source, field(), msg));
            }
        };
        let merged = format!("{left}{right}");
        for part in [left, right, merged.as_str()] {
            if !ids.contains_key(part) {
                let msg = format!("{part:?} is not in tokenizer.ggml.tokens");
                return Err(Error::format(KIND, source, field(), msg));
            }
        }
        parsed.push((left.to_owned(), right.to_owned()));
    }
    Ok(parsed)
}
