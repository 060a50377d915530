//! The small JSON files that sit next to `tokenizer.json` in a Hugging Face checkpoint:
//! `tokenizer_config.json` (special tokens, BOS/EOS flags, chat template) and
//! `generation_config.json` (the ids generation starts, stops and pads with).

use serde_json::{json, Map, Value};

use super::pretokenizers;
use super::GgufVocab;

/// transformers' `tokenizer_config.json` for the tokenizer built from `vocab`.
///
/// Special ids out of range are left out rather than reported: `tokenizer_json_from_gguf`
/// validates the same vocabulary and is the place that fails.
pub fn tokenizer_config_from_gguf(vocab: &GgufVocab, model_max_length: Option<u64>) -> Value {
    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    for (name, id) in [
        ("bos_token", vocab.bos_id),
        ("eos_token", vocab.eos_id),
        ("unk_token", vocab.unk_id),
        ("pad_token", vocab.pad_id),
    ] {
        if let Some(token) = vocab.token(id) {
            config.insert(name.into(), json!(token));
        }
    }
    // transformers rebuilds the post-processor from these two flags, so they must agree with
    // the one written into tokenizer.json.
    config.insert("add_bos_token".into(), json!(vocab.adds_bos()));
    config.insert("add_eos_token".into(), json!(vocab.adds_eos()));
    let clean = vocab.model == "gpt2"
        && pretokenizers::lookup(vocab.pre.as_deref()).is_some_and(|p| p.clean_spaces);
    config.insert("clean_up_tokenization_spaces".into(), json!(clean));
    if let Some(n) = model_max_length {
        config.insert("model_max_length".into(), json!(n));
    }
    if let Some(template) = &vocab.chat_template {
        config.insert("chat_template".into(), json!(template));
    }
    Value::Object(config)
}

/// transformers' `generation_config.json` with the special ids that are known.
pub fn generation_config(bos: Option<u32>, eos: Option<u32>, pad: Option<u32>) -> Value {
    let mut config = Map::new();
    for (name, id) in [
        ("bos_token_id", bos),
        ("eos_token_id", eos),
        ("pad_token_id", pad),
    ] {
        if let Some(id) = id {
            config.insert(name.into(), json!(id));
        }
    }
    Value::Object(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> GgufVocab {
        GgufVocab {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens: vec!["<|endoftext|>".into(), "<|im_start|>".into(), "a".into()],
            bos_id: Some(1),
            eos_id: Some(0),
            pad_id: Some(9), // out of range: left out
            add_bos: Some(false),
            chat_template: Some("{{ x }}".into()),
            ..GgufVocab::default()
        }
    }

    #[test]
    fn tokenizer_config_carries_tokens_flags_and_template() {
        let c = tokenizer_config_from_gguf(&vocab(), Some(8192));
        assert_eq!(c["tokenizer_class"], "PreTrainedTokenizerFast");
        assert_eq!(c["bos_token"], "<|im_start|>");
        assert_eq!(c["eos_token"], "<|endoftext|>");
        assert!(c.get("pad_token").is_none());
        assert!(c.get("unk_token").is_none());
        assert_eq!(c["add_bos_token"], false);
        assert_eq!(c["add_eos_token"], false);
        assert_eq!(c["model_max_length"], 8192);
        assert_eq!(c["chat_template"], "{{ x }}");
        assert!(tokenizer_config_from_gguf(&vocab(), None)
            .get("model_max_length")
            .is_none());
    }

    #[test]
    fn sentencepiece_adds_bos_by_default() {
        let v = GgufVocab {
            model: "llama".into(),
            add_bos: None,
            ..vocab()
        };
        assert_eq!(tokenizer_config_from_gguf(&v, None)["add_bos_token"], true);
    }

    #[test]
    fn generation_config_leaves_out_unknown_ids() {
        let g = generation_config(Some(1), Some(2), None);
        assert_eq!(g, json!({"bos_token_id": 1, "eos_token_id": 2}));
    }
}
