//! Unit tests of building a tokenizer from GGUF fields: the errors name the field at fault, and
//! small hand-made vocabularies tokenize as intended. Agreement with transformers on real and
//! tiny vocabularies is checked in tests/tokenizer_golden.rs.

use std::path::Path;

use super::byte_level::byte_char;
use super::token_type::{CONTROL, NORMAL, USER_DEFINED};
use super::{tokenizer_json_from_gguf, GgufVocab, Tokenizer};
use crate::Error;

const SRC: &str = "test.gguf";

/// 256 byte tokens, "th", "the", "Ġthe", and two control tokens.
fn gpt2_vocab() -> GgufVocab {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let merges = ["t h", "th e", "Ġ the"];
    tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
    let mut token_types = vec![NORMAL; tokens.len()];
    tokens.extend(["<|bos|>".to_string(), "<|eos|>".to_string()]);
    token_types.extend([CONTROL, CONTROL]);
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        bos_id: Some(tokens.len() as u32 - 2),
        eos_id: Some(tokens.len() as u32 - 1),
        tokens,
        token_types,
        merges: merges.iter().map(|m| m.to_string()).collect(),
        ..GgufVocab::default()
    }
}

fn build(vocab: &GgufVocab) -> Tokenizer {
    let json = tokenizer_json_from_gguf(vocab, Path::new(SRC)).expect("build tokenizer.json");
    Tokenizer::from_json_value(&json, SRC).expect("load tokenizer.json")
}

/// The field a `Format` error names, or the `what` of an `Unsupported` one, plus the message.
fn fault(vocab: &GgufVocab) -> (String, String) {
    match tokenizer_json_from_gguf(vocab, Path::new(SRC)) {
        Err(Error::Format { field, msg, .. }) => (field, msg),
        Err(Error::Unsupported { what, msg, .. }) => (what.to_string(), msg),
        other => panic!("expected a format or unsupported error, got {other:?}"),
    }
}

#[test]
fn gpt2_vocab_encodes_with_merges_specials_and_digits() {
    let t = build(&gpt2_vocab());
    let the = t.token_to_id("the").unwrap();
    let space_the = t.token_to_id("Ġthe").unwrap();
    let (bos, eos) = (259, 260);
    assert_eq!(t.encode("the the", false).unwrap(), vec![the, space_the]);
    // No BOS unless the file asks for it; control tokens in the text are matched whole.
    let ids = t.encode("<|bos|>the<|eos|>", true).unwrap();
    assert_eq!(ids, vec![bos, the, eos]);
    // smollm splits digits one by one: "12" is never one piece even if it were a token.
    assert_eq!(t.encode("12", false).unwrap(), vec![49, 50]);
    assert_eq!(t.decode(&ids, true).unwrap(), "the");
    assert_eq!(t.decode(&ids, false).unwrap(), "<|bos|>the<|eos|>");
}

#[test]
fn add_bos_and_add_eos_shape_the_post_processor() {
    let vocab = GgufVocab {
        add_bos: Some(true),
        add_eos: Some(true),
        ..gpt2_vocab()
    };
    let t = build(&vocab);
    assert_eq!(t.encode("a", true).unwrap(), vec![259, 97, 260]);
    assert_eq!(t.encode("a", false).unwrap(), vec![97]);
}

#[test]
fn user_defined_tokens_are_whole_but_not_special() {
    let mut vocab = gpt2_vocab();
    vocab.tokens.push("<think>".into());
    vocab.token_types.push(USER_DEFINED);
    let t = build(&vocab);
    let think = vocab.tokens.len() as u32 - 1;
    assert_eq!(t.encode("<think>", false).unwrap(), vec![think]);
    assert_eq!(t.decode(&[think], true).unwrap(), "<think>");
}

#[test]
fn control_token_outside_byte_alphabet_keeps_its_id() {
    // DeepSeek-style control text uses characters that are not in the byte alphabet.
    let mut vocab = gpt2_vocab();
    vocab.tokens.push("<｜begin▁of▁sentence｜>".into());
    vocab.token_types.push(CONTROL);
    let t = build(&vocab);
    let id = vocab.tokens.len() as u32 - 1;
    assert_eq!(
        t.encode("<｜begin▁of▁sentence｜>", false).unwrap(),
        vec![id]
    );
    assert_eq!(t.vocab_size(), vocab.tokens.len());
}

#[test]
fn mismatched_token_type_length_names_the_field() {
    let mut vocab = gpt2_vocab();
    vocab.token_types.pop();
    let (field, msg) = fault(&vocab);
    assert_eq!(field, "tokenizer.ggml.token_type");
    assert!(msg.contains("260") && msg.contains("261"), "{msg}");
}

#[test]
fn mismatched_scores_length_names_the_field() {
    let vocab = GgufVocab {
        scores: vec![0.0; 3],
        ..gpt2_vocab()
    };
    assert_eq!(fault(&vocab).0, "tokenizer.ggml.scores");
}

#[test]
fn merge_without_a_space_names_its_index() {
    let mut vocab = gpt2_vocab();
    vocab.merges[1] = "the".into();
    let (field, msg) = fault(&vocab);
    assert_eq!(field, "tokenizer.ggml.merges[1]");
    assert!(msg.contains("\"the\""), "{msg}");
}

#[test]
fn merge_with_three_parts_or_unknown_token_names_its_index() {
    let mut vocab = gpt2_vocab();
    vocab.merges[2] = "a b c".into();
    assert_eq!(fault(&vocab).0, "tokenizer.ggml.merges[2]");
    vocab.merges[2] = "Ġ thx".into();
    let (field, msg) = fault(&vocab);
    assert_eq!(field, "tokenizer.ggml.merges[2]");
    assert!(msg.contains("thx"), "{msg}");
}

#[test]
fn special_ids_out_of_range_name_the_field() {
    let n = gpt2_vocab().tokens.len() as u32;
    type Set = fn(&mut GgufVocab, u32);
    let cases: [(&str, Set); 4] = [
        ("tokenizer.ggml.bos_token_id", |v, n| v.bos_id = Some(n)),
        ("tokenizer.ggml.eos_token_id", |v, n| v.eos_id = Some(n)),
        ("tokenizer.ggml.unknown_token_id", |v, n| v.unk_id = Some(n)),
        ("tokenizer.ggml.padding_token_id", |v, n| {
            v.pad_id = Some(n + 7)
        }),
    ];
    for (expected, set) in cases {
        let mut vocab = gpt2_vocab();
        set(&mut vocab, n);
        let (field, msg) = fault(&vocab);
        assert_eq!(field, expected);
        assert!(msg.contains("out of range"), "{msg}");
    }
}

#[test]
fn duplicate_token_names_its_index() {
    let mut vocab = gpt2_vocab();
    vocab.tokens[258] = "th".into(); // "Ġthe" becomes a second "th"
    let (field, msg) = fault(&vocab);
    assert_eq!(field, "tokenizer.ggml.tokens[258]");
    assert!(msg.contains("256"), "{msg}");
}

#[test]
fn empty_vocabulary_is_an_error() {
    let vocab = GgufVocab {
        model: "gpt2".into(),
        ..GgufVocab::default()
    };
    assert_eq!(fault(&vocab).0, "tokenizer.ggml.tokens");
}

#[test]
fn unknown_model_is_unsupported_and_named() {
    let vocab = GgufVocab {
        model: "bert".into(),
        ..gpt2_vocab()
    };
    let (what, msg) = fault(&vocab);
    assert_eq!(what, "tokenizer model");
    assert!(msg.contains("\"bert\"") && msg.contains("gpt2"), "{msg}");
}

#[test]
fn unknown_pre_is_unsupported_and_lists_the_supported_ones() {
    let vocab = GgufVocab {
        pre: Some("deepseek-coder".into()),
        ..gpt2_vocab()
    };
    let (what, msg) = fault(&vocab);
    assert_eq!(what, "tokenizer pre-tokenizer");
    assert!(msg.contains("\"deepseek-coder\""), "{msg}");
    assert!(msg.contains("smollm") && msg.contains("llama-bpe"), "{msg}");
}

#[test]
fn sentencepiece_without_merges_or_scores_names_scores() {
    let vocab = GgufVocab {
        model: "llama".into(),
        tokens: vec!["<unk>".into(), "▁a".into()],
        ..GgufVocab::default()
    };
    assert_eq!(fault(&vocab).0, "tokenizer.ggml.scores");
}

#[test]
fn sentencepiece_derives_merges_and_falls_back_to_bytes() {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["▁", "a", "b", "▁a", "▁ab"].map(String::from));
    let n = tokens.len();
    let mut scores = vec![0.0; n];
    scores[n - 2] = -1.0;
    scores[n - 1] = -2.0;
    let mut token_types = vec![NORMAL; n];
    token_types[..3].copy_from_slice(&[2, CONTROL, CONTROL]);
    token_types[3..259].fill(6);
    let vocab = GgufVocab {
        model: "llama".into(),
        tokens,
        token_types,
        scores,
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        ..GgufVocab::default()
    };
    let t = build(&vocab);
    let ab = n as u32 - 1;
    // BOS by default, the "▁" prefix, then byte fallback for "é" (0xC3 0xA9).
    let ids = t.encode("ab é", true).unwrap();
    assert_eq!(ids, vec![1, ab, 259, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(t.decode(&ids, true).unwrap(), "ab é");
}

#[test]
fn decode_rejects_ids_outside_the_vocabulary() {
    let t = build(&gpt2_vocab());
    let err = t.decode(&[1, 100_000], false).unwrap_err();
    assert!(err.to_string().contains("100000"), "{err}");
}

#[test]
fn from_file_names_the_file_and_reads_eos_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{not json").unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let json = tokenizer_json_from_gguf(&gpt2_vocab(), Path::new(SRC)).unwrap();
    std::fs::write(&path, json.to_string()).unwrap();
    assert_eq!(Tokenizer::from_file(&path).unwrap().eos_id(), None);
    let config = super::tokenizer_config_from_gguf(&gpt2_vocab(), None);
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    assert_eq!(Tokenizer::from_file(&path).unwrap().eos_id(), Some(260));
}
