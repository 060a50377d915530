//! The pre-tokenizers of byte-level BPE vocabularies, keyed by GGUF's `tokenizer.ggml.pre`.
//!
//! The names and the split each one means follow llama.cpp's `llama_vocab::impl::load` and
//! `llm_tokenizer_bpe` (src/llama-vocab.cpp), which is what wrote the name into the file. Each
//! split is expressed the way the model's own Hugging Face `tokenizer.json` expresses it, so the
//! `tokenizers` crate and transformers reproduce llama.cpp's pieces.

use serde_json::{json, Value};

/// How text is cut into words before BPE merges are applied inside each word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// GPT-2's own regex, which `ByteLevel { use_regex: true }` applies.
    Gpt2,
    /// Every digit alone, then GPT-2's regex (StarCoder, SmolLM: `Digits` + `ByteLevel`).
    DigitsThenGpt2,
    /// One regex applied with `Split { behavior: Isolated }`, then bytes mapped without a regex.
    Regex(&'static str),
}

/// What a `tokenizer.ggml.pre` name implies for the tokenizer built from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreTokenizer {
    split: Split,
    /// A word that is itself a vocabulary entry is emitted whole, without running the merges
    /// (llama.cpp `ignore_merges`; `"ignore_merges": true` in Llama 3's tokenizer.json).
    pub ignore_merges: bool,
    /// llama.cpp's BOS default when the file has no `tokenizer.ggml.add_bos_token`.
    pub add_bos_default: bool,
    /// Whether decoding cleans spaces before punctuation (llama.cpp `clean_spaces`,
    /// transformers' `clean_up_tokenization_spaces`).
    pub clean_spaces: bool,
}

// The regexes are the ones in each model family's published tokenizer.json.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const fn pre(split: Split, ignore_merges: bool, add_bos: bool, clean: bool) -> PreTokenizer {
    PreTokenizer {
        split,
        ignore_merges,
        add_bos_default: add_bos,
        clean_spaces: clean,
    }
}

/// `(names, pre-tokenizer)`, grouped as llama.cpp groups the names into pre-tokenizer types.
const TABLE: &[(&[&str], PreTokenizer)] = &[
    // llama.cpp's own "default" adds punctuation and three-digit splits as a last-resort guess
    // for unlabelled files; a file that says "default" was labelled as GPT-2-like, which is
    // also how transformers' GGUF converter reads it.
    (
        &[
            "default",
            "gpt2",
            "gpt-2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "exaone4",
            "mellum",
            "gigachat",
            "a.x-4.0",
            "jina-es",
            "jina-de",
            "jina-v2-es",
            "jina-v2-de",
        ],
        pre(Split::Gpt2, false, false, true),
    ),
    (
        &["smollm", "starcoder", "refact", "codeshell", "exaone"],
        pre(Split::DigitsThenGpt2, false, false, true),
    ),
    (
        &["command-r"],
        pre(Split::DigitsThenGpt2, false, false, false),
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
        ],
        pre(Split::Regex(LLAMA3), true, true, true),
    ),
    (
        &["dbrx", "smaug-bpe"],
        pre(Split::Regex(LLAMA3), false, false, true),
    ),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
        ],
        pre(Split::Regex(QWEN2), false, false, false),
    ),
    (&["tekken"], pre(Split::Regex(TEKKEN), true, true, false)),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie"],
        pre(Split::Regex(GPT4O), false, false, false),
    ),
];

/// The pre-tokenizer for `tokenizer.ggml.pre`; a missing name means "default", as in llama.cpp.
pub(crate) fn lookup(name: Option<&str>) -> Option<PreTokenizer> {
    let name = name.unwrap_or("default");
    TABLE
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, p)| *p)
}

/// The name to write for a tokenizer.json `pre_tokenizer` and the BPE model's
/// `ignore_merges` (the first name of the first entry with both), or `None` when it is none of
/// the splits above. Used by `export gguf`.
pub(crate) fn name_for(pre_tokenizer: &Value, ignore_merges: bool) -> Option<&'static str> {
    TABLE
        .iter()
        .find(|(_, p)| &p.to_json() == pre_tokenizer && p.ignore_merges == ignore_merges)
        .and_then(|(names, _)| names.first().copied())
}

/// Every supported name, sorted, for error messages.
pub(crate) fn supported_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = TABLE.iter().flat_map(|(n, _)| n.iter().copied()).collect();
    names.sort_unstable();
    names
}

impl PreTokenizer {
    /// The `pre_tokenizer` object of tokenizer.json.
    pub fn to_json(self) -> Value {
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        match self.split {
            Split::Gpt2 => byte_level(true),
            Split::DigitsThenGpt2 => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            Split::Regex(regex) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                 "invert": false},
                byte_level(false),
            ]}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let names = supported_names();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup);
    }

    #[test]
    fn missing_name_is_default_and_unknown_is_none() {
        assert_eq!(lookup(None).map(|p| p.split), Some(Split::Gpt2));
        assert!(lookup(Some("no-such-pre")).is_none());
        let smollm = lookup(Some("smollm")).map(|p| p.split);
        assert_eq!(smollm, Some(Split::DigitsThenGpt2));
    }

    #[test]
    fn name_for_inverts_to_json() {
        for (names, p) in TABLE {
            let name = name_for(&p.to_json(), p.ignore_merges).unwrap();
            // Entries with the same split and flags share a json; the first such entry wins.
            let first = TABLE
                .iter()
                .find(|(_, q)| q.to_json() == p.to_json() && q.ignore_merges == p.ignore_merges)
                .unwrap();
            assert_eq!(name, first.0[0], "{names:?}");
            assert_eq!(lookup(Some(name)).unwrap().split, p.split);
        }
        assert_eq!(name_for(&json!({"type": "Metaspace"}), false), None);
    }

    /// Every regex in the table must compile in the `tokenizers` crate's regex engine.
    #[test]
    fn every_entry_loads_in_tokenizers() {
        for (names, p) in TABLE {
            let parsed: std::result::Result<tokenizers::PreTokenizerWrapper, _> =
                serde_json::from_value(p.to_json());
            assert!(parsed.is_ok(), "{names:?}: {:?}", parsed.err());
        }
    }
}
