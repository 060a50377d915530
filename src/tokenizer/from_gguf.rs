//! Build a Hugging Face `tokenizer.json` from a GGUF file's tokenizer metadata.
//!
//! Format: <https://huggingface.co/docs/tokenizers/api/tokenizer> (the serde form of
//! `tokenizers::Tokenizer`). The mapping from llama.cpp's fields follows llama.cpp's own
//! tokenizer (src/llama-vocab.cpp), spelled as the model family's published tokenizer.json.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::byte_level;
use super::merges::merges_from_scores;
use super::pretokenizers;
use super::token_type;
use super::validate::{check_vocab, parse_merges, unique_ids};
use super::GgufVocab;
use crate::{Error, Result};

/// The SentencePiece word-boundary marker, which stands for a space.
const SPIECE_SPACE: &str = "\u{2581}";

/// The `tokenizer.json` document for `vocab`. `source` names the GGUF file in errors.
///
/// Supported: `tokenizer.ggml.model` "gpt2" (byte-level BPE, pre-tokenizer per
/// `tokenizer.ggml.pre`) and "llama" (SentencePiece BPE with byte fallback; merges from the file
/// or derived from the scores).
pub fn tokenizer_json_from_gguf(vocab: &GgufVocab, source: &Path) -> Result<Value> {
    check_vocab(vocab, source)?;
    let (model, normalizer, pre_tokenizer, decoder) = match vocab.model.as_str() {
        "gpt2" => byte_level_bpe(vocab, source)?,
        "llama" => sentencepiece_bpe(vocab, source)?,
        other => {
            let msg = format!(
                "tokenizer.ggml.model is {other:?}; supported: \"gpt2\" (byte-level BPE), \
                 \"llama\" (SentencePiece BPE)"
            );
            return Err(Error::unsupported("tokenizer model", source, msg));
        }
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(vocab),
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "model": model,
        "post_processor": post_processor(vocab),
        "decoder": decoder,
    }))
}

/// `(model, normalizer, pre_tokenizer, decoder)` of one tokenizer family.
type Parts = (Value, Value, Value, Value);

/// Byte-level BPE (GPT-2, Llama 3, Qwen 2, SmolLM...): tokens are spelled in the byte alphabet.
fn byte_level_bpe(vocab: &GgufVocab, source: &Path) -> Result<Parts> {
    let pre = pretokenizers::lookup(vocab.pre.as_deref()).ok_or_else(|| {
        let msg = format!(
            "tokenizer.ggml.pre is {:?}; supported: {}",
            vocab.pre.as_deref().unwrap_or_default(),
            pretokenizers::supported_names().join(", ")
        );
        Error::unsupported("tokenizer pre-tokenizer", source, msg)
    })?;

    // Normal tokens are stored byte-spelled, but some converters store a few as plain text;
    // respell those so BPE can reach them (as transformers does). Control and user-defined
    // tokens are matched in the raw text as added tokens, so they keep their text.
    let keys: Vec<String> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let added = is_added(vocab.token_type(i));
            if added || byte_level::is_spelled(t) {
                t.clone()
            } else {
                byte_level::spell(t)
            }
        })
        .collect();
    let ids = unique_ids(keys.iter().map(String::as_str), source)?;
    let merges = parse_merges(&vocab.merges, &ids, source)?;

    let model = bpe_model(&keys, &merges, None, false, pre.ignore_merges);
    let byte_level_decoder = json!({"type": "ByteLevel", "add_prefix_space": true,
                                    "trim_offsets": true, "use_regex": true});
    Ok((model, Value::Null, pre.to_json(), byte_level_decoder))
}

/// SentencePiece BPE (Llama 2, Mistral v0.1...): spaces become `▁`, unknown characters fall
/// back to `<0xNN>` byte tokens.
fn sentencepiece_bpe(vocab: &GgufVocab, source: &Path) -> Result<Parts> {
    let ids = unique_ids(vocab.tokens.iter().map(String::as_str), source)?;
    let merges = if !vocab.merges.is_empty() {
        parse_merges(&vocab.merges, &ids, source)?
    } else if vocab.scores.len() == vocab.tokens.len() {
        merges_from_scores(&vocab.tokens, &vocab.scores)
    } else {
        let msg = "a SentencePiece vocabulary without tokenizer.ggml.merges needs scores to \
                   derive them, and the file has none";
        return Err(Error::format(
            "GGUF tokenizer",
            source,
            "tokenizer.ggml.scores",
            msg,
        ));
    };
    let unk = vocab.token(vocab.unk_id);
    let model = bpe_model(&vocab.tokens, &merges, unk, true, false);

    // llama.cpp prefixes the text with a space unless told not to, and only at the start of
    // the text, which is Metaspace's "first" scheme (not once per added-token split).
    let prefix = vocab.add_space_prefix.unwrap_or(true);
    let pre_tokenizer = json!({
        "type": "Metaspace", "replacement": SPIECE_SPACE,
        "prepend_scheme": if prefix { "first" } else { "never" }, "split": false,
    });
    let mut steps = vec![
        json!({"type": "Replace", "pattern": {"String": SPIECE_SPACE}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prefix {
        // Drop the space the prefix added, so decode(encode(text)) == text.
        steps.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let decoder = json!({"type": "Sequence", "decoders": steps});
    Ok((model, Value::Null, pre_tokenizer, decoder))
}

/// The `model` object: a BPE over `tokens` (id = position) and `merges`.
fn bpe_model(
    tokens: &[String],
    merges: &[(String, String)],
    unk: Option<&str>,
    byte_fallback: bool,
    ignore_merges: bool,
) -> Value {
    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    // Pairs, not "left right" strings, so a token containing a space cannot be misread.
    let merges: Vec<Value> = merges.iter().map(|(l, r)| json!([l, r])).collect();
    json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": unk,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": byte_fallback,
        "byte_fallback": byte_fallback,
        "ignore_merges": ignore_merges,
        "vocab": vocab,
        "merges": merges,
    })
}

/// Token types matched whole in the raw text before BPE runs.
fn is_added(kind: i32) -> bool {
    matches!(
        kind,
        token_type::UNKNOWN | token_type::CONTROL | token_type::USER_DEFINED
    )
}

/// Control and unknown tokens are special (skipped by `decode(.., skip_special = true)`);
/// user-defined ones (like `<think>`) are matched whole but decoded as text.
fn added_tokens(vocab: &GgufVocab) -> Vec<Value> {
    vocab
        .tokens
        .iter()
        .enumerate()
        .filter(|&(i, t)| is_added(vocab.token_type(i)) && !t.is_empty())
        .map(|(i, t)| {
            let special = vocab.token_type(i) != token_type::USER_DEFINED;
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": special})
        })
        .collect()
}

/// BOS/EOS around each sequence, as llama.cpp adds them (`add_bos_token`, `add_eos_token`).
fn post_processor(vocab: &GgufVocab) -> Value {
    let bos = vocab.token(vocab.bos_id).filter(|_| vocab.adds_bos());
    let eos = vocab.token(vocab.eos_id).filter(|_| vocab.adds_eos());
    let template = |seq: &str, type_id: u32| {
        let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": type_id}});
        let mut items = Vec::new();
        items.extend(bos.map(special));
        items.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
        items.extend(eos.map(special));
        items
    };
    let single = template("A", 0);
    let mut pair = single.clone();
    pair.extend(template("B", 1));

    let mut special_tokens = Map::new();
    for (token, id) in [(bos, vocab.bos_id), (eos, vocab.eos_id)] {
        if let (Some(t), Some(id)) = (token, id) {
            special_tokens.insert(t.to_owned(), json!({"id": t, "ids": [id], "tokens": [t]}));
        }
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair,
           "special_tokens": special_tokens})
}
