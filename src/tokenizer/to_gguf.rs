//! The other direction of `from_gguf`: a checkpoint's Hugging Face `tokenizer.json` (with
//! `tokenizer_config.json` for the special tokens, flags and chat template) as the GGUF
//! tokenizer fields llama.cpp reads, for `export gguf`.
//!
//! Supported: byte-level BPE (`tokenizer.ggml.model` "gpt2") whose pre-tokenizer is one of the
//! splits llama.cpp names (`pretokenizers`), which is what an imported GGUF and the Llama 3,
//! SmolLM and Qwen 2 families carry. The token table and types follow gguf-py's
//! `convert_hf_to_gguf.py` (`get_vocab_base`): ids missing from the vocabulary up to the model's
//! vocab size become `[PAD{id}]` tokens of type "unused", added tokens are "control" when
//! special and "user defined" otherwise.

use std::path::Path;

use serde_json::Value;

use super::{pretokenizers, token_type, GgufVocab};
use crate::{Error, Result};

const KIND: &str = "tokenizer.json";

/// Special ids known from config.json, used when tokenizer_config.json does not name them.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

/// Reads `dir/tokenizer.json` and `dir/tokenizer_config.json` (optional) into the GGUF fields,
/// with `vocab_size` tokens (the embedding's row count).
pub fn gguf_vocab_from_dir(dir: &Path, vocab_size: usize, ids: SpecialIds) -> Result<GgufVocab> {
    let tok_path = dir.join("tokenizer.json");
    let tok = read_json(&tok_path, "export needs the checkpoint's tokenizer.json")?;
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = if cfg_path.exists() {
        read_json(&cfg_path, "")?
    } else {
        Value::Null
    };
    gguf_vocab_from_json(&tok, &cfg, vocab_size, ids, &tok_path)
}

fn read_json(path: &Path, hint: &str) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| {
        if hint.is_empty() {
            Error::io("read", path, e)
        } else {
            Error::format(KIND, path, "file", format!("{e} ({hint})"))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(KIND, path, "json", e.to_string()))
}

/// The same from parsed documents; `path` names tokenizer.json in errors.
pub fn gguf_vocab_from_json(
    tok: &Value,
    cfg: &Value,
    vocab_size: usize,
    ids: SpecialIds,
    path: &Path,
) -> Result<GgufVocab> {
    let err = |field: &str, msg: String| Error::format(KIND, path, field, msg);
    let model = &tok["model"];
    if model["type"].as_str() != Some("BPE") {
        let msg = format!(
            "model.type is {}; export writes byte-level BPE vocabularies only",
            model["type"]
        );
        return Err(Error::unsupported("tokenizer", path, msg));
    }
    let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);
    let pre = pretokenizers::name_for(&tok["pre_tokenizer"], ignore_merges).ok_or_else(|| {
        let msg = "the pre_tokenizer is not one of the byte-level splits llama.cpp names \
                   (SentencePiece-style and custom tokenizers are not exported yet)";
        Error::unsupported("tokenizer", path, msg)
    })?;

    // Token table: the BPE vocabulary, then the added tokens (which may extend it).
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| err("model.vocab", "expected an object".into()))?;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |id: u64, text: &str, kind: i32, field: &str| -> Result<()> {
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| tokens.get_mut(i))
            .ok_or_else(|| {
                err(
                    field,
                    format!("id {id} of {text:?} is outside the model's {vocab_size} embeddings"),
                )
            })?;
        match slot {
            Some((t, _)) if t.as_str() != text && kind == token_type::NORMAL => {
                Err(err(field, format!("id {id} is both {t:?} and {text:?}")))
            }
            _ => {
                *slot = Some((text.to_string(), kind));
                Ok(())
            }
        }
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| err(&format!("model.vocab.{text}"), "expected an id".into()))?;
        place(id, text, token_type::NORMAL, "model.vocab")?;
    }
    let added = tok["added_tokens"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (i, a) in added.iter().enumerate() {
        let field = format!("added_tokens[{i}]");
        let id = a["id"]
            .as_u64()
            .ok_or_else(|| err(&field, "missing id".into()))?;
        let text = a["content"]
            .as_str()
            .ok_or_else(|| err(&field, "missing content".into()))?;
        let kind = if a["special"].as_bool().unwrap_or(false) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        place(id, text, kind, &field)?;
    }
    let (tokens, token_types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), token_type::UNUSED)))
        .unzip();

    let merges = read_merges(&model["merges"], path)?;
    let id_of = |key: &str| -> Result<Option<u32>> {
        // tokenizer_config.json names a special token by its text, or as {"content": text}.
        let v = &cfg[key];
        let text = v.as_str().or_else(|| v["content"].as_str());
        let Some(text) = text else { return Ok(None) };
        match tokens.iter().position(|t| t == text) {
            Some(i) => Ok(Some(i as u32)),
            None => Err(Error::format(
                "tokenizer_config.json",
                path.with_file_name("tokenizer_config.json"),
                key,
                format!("{text:?} is not a token"),
            )),
        }
    };
    let unk_text = model["unk_token"].as_str();
    let unk_from_model = unk_text.and_then(|t| tokens.iter().position(|x| x == t));
    Ok(GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.to_string()),
        bos_id: id_of("bos_token")?.or(ids.bos),
        eos_id: id_of("eos_token")?.or(ids.eos),
        unk_id: id_of("unk_token")?.or(unk_from_model.map(|i| i as u32)),
        pad_id: id_of("pad_token")?.or(ids.pad),
        add_bos: cfg["add_bos_token"].as_bool(),
        add_eos: cfg["add_eos_token"].as_bool(),
        add_space_prefix: None,
        chat_template: cfg["chat_template"].as_str().map(str::to_string),
        tokens,
        token_types,
        scores: Vec::new(),
        merges,
    })
}

/// Merges as GGUF stores them, "left right": from either tokenizer.json spelling (strings, or
/// pairs, which newer files use so that a token may contain a space). A pair whose halves
/// contain a space cannot be written this way and is refused.
fn read_merges(v: &Value, path: &Path) -> Result<Vec<String>> {
    let Some(items) = v.as_array() else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let field = || format!("model.merges[{i}]");
            if let Some(s) = m.as_str() {
                return Ok(s.to_string());
            }
            match m.as_array().map(Vec::as_slice) {
                Some([Value::String(l), Value::String(r)])
                    if !l.contains(' ') && !r.contains(' ') =>
                {
                    Ok(format!("{l} {r}"))
                }
                _ => Err(Error::format(
                    KIND,
                    path,
                    field(),
                    "expected \"left right\" or a pair of space-free strings",
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "special": true},
                {"id": 5, "content": "<think>", "special": false}
            ],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                              "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "unk_token": null,
                      "vocab": {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3, "Ġa": 4},
                      "merges": [["a", "b"], "Ġ a"]}
        })
    }

    #[test]
    fn builds_the_gguf_fields_with_types_padding_and_specials() {
        let cfg = json!({"bos_token": {"content": "<|endoftext|>"}, "eos_token": "<think>",
                         "add_bos_token": false, "chat_template": "{{x}}"});
        let ids = SpecialIds {
            bos: Some(3),
            eos: None,
            pad: Some(2),
        };
        let v = gguf_vocab_from_json(&doc(), &cfg, 8, ids, Path::new("t.json")).unwrap();
        assert_eq!(v.model, "gpt2");
        assert_eq!(v.pre.as_deref(), Some("default"));
        assert_eq!(
            v.tokens,
            [
                "<|endoftext|>",
                "a",
                "b",
                "ab",
                "Ġa",
                "<think>",
                "[PAD6]",
                "[PAD7]"
            ]
        );
        assert_eq!(v.token_types, [3, 1, 1, 1, 1, 4, 5, 5]);
        assert_eq!(v.merges, ["a b", "Ġ a"]);
        assert_eq!(
            (v.bos_id, v.eos_id, v.pad_id, v.unk_id),
            (Some(0), Some(5), Some(2), None)
        );
        assert_eq!(v.add_bos, Some(false));
        assert_eq!(v.chat_template.as_deref(), Some("{{x}}"));
    }

    #[test]
    fn refuses_what_it_cannot_write_by_field() {
        let p = Path::new("t.json");
        let e = gguf_vocab_from_json(&doc(), &Value::Null, 4, SpecialIds::default(), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the model's 4 embeddings"), "{e}");
        let mut d = doc();
        d["pre_tokenizer"] = json!({"type": "Metaspace"});
        let e = gguf_vocab_from_json(&d, &Value::Null, 8, SpecialIds::default(), p).unwrap_err();
        assert!(e.to_string().contains("pre_tokenizer"), "{e}");
        let mut d = doc();
        d["model"]["merges"] = json!([["a b", "c"]]);
        let e = gguf_vocab_from_json(&d, &Value::Null, 8, SpecialIds::default(), p).unwrap_err();
        assert!(e.to_string().contains("model.merges[0]"), "{e}");
        let cfg = json!({"eos_token": "<nope>"});
        let e = gguf_vocab_from_json(&doc(), &cfg, 8, SpecialIds::default(), p).unwrap_err();
        assert!(e.to_string().contains("eos_token"), "{e}");
    }
}
