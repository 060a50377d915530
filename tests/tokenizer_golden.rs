//! Our GGUF → tokenizer.json conversion against transformers' own GGUF tokenizer conversion:
//! identical ids and identical decoded text on every recorded string.
//!
//! Fixtures come from `fixtures/gen_tokenizer_golden.py` (regenerate, never hand-edit):
//! - `fixtures/tokenizer/tiny_{gpt2,llama}.json`: a hand-made vocabulary with its expected ids;
//!   always run.
//! - `fixtures/tokenizer/smollm2_golden.json`: ids for the default model, checked against the
//!   `tokenizer.json` that `intervene import` built from the GGUF's own vocabulary (through our
//!   GGUF reader) in `models/smollm2`; without that checkpoint the test prints why and skips.

use std::path::{Path, PathBuf};

use intervene::tokenizer::{tokenizer_json_from_gguf, GgufVocab, Tokenizer};
use serde::Deserialize;

const FORMAT: &str = "intervene-tokenizer-golden";
const VERSION: u32 = 1;
const HINT: &str = "regenerate with: /opt/pyref/bin/python fixtures/gen_tokenizer_golden.py";

#[derive(Deserialize)]
struct Golden {
    format: String,
    version: u32,
    // Recorded by the generator for provenance of the golden file; not compared.
    #[serde(default)]
    #[allow(dead_code)]
    gguf_sha256: Option<String>,
    #[serde(default)]
    vocab: Option<GgufVocab>,
    #[serde(default)]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
    decoded_skip_special: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> Golden {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}; {HINT}", path.display()));
    let golden: Golden = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}; {HINT}", path.display()));
    assert!(
        golden.format == FORMAT && golden.version == VERSION,
        "{}: header is {:?} v{}, expected {FORMAT:?} v{VERSION}; {HINT}",
        path.display(),
        golden.format,
        golden.version
    );
    golden
}

/// Build from `vocab`, run every case, and report all mismatches at once.
fn check(vocab: &GgufVocab, cases: &[Case], name: &str) {
    let json = tokenizer_json_from_gguf(vocab, Path::new(name)).expect("build tokenizer.json");
    let tokenizer = Tokenizer::from_json_value(&json, name).expect("load tokenizer.json");
    check_tokenizer(&tokenizer, cases, name);
}

fn check_tokenizer(tokenizer: &Tokenizer, cases: &[Case], name: &str) {
    assert!(!cases.is_empty(), "{name}: no cases; {HINT}");
    let mut failures = Vec::new();
    for case in cases {
        let ids = tokenizer.encode(&case.text, true).expect("encode");
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n    ids  ours {ids:?}\n         want {:?}",
                case.text, case.ids
            ));
            continue;
        }
        for (skip, want) in [(false, &case.decoded), (true, &case.decoded_skip_special)] {
            let got = tokenizer.decode(&ids, skip).expect("decode");
            if &got != want {
                failures.push(format!(
                    "{:?}\n    decode(skip_special={skip}) ours {got:?}\n    want {want:?}",
                    case.text
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ from transformers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{name}: {} cases agree with transformers", cases.len());
}

fn check_tiny(file: &str) {
    let path = root().join("fixtures/tokenizer").join(file);
    let golden = load(&path);
    let vocab = golden
        .vocab
        .unwrap_or_else(|| panic!("{}: no vocab; {HINT}", path.display()));
    check(&vocab, &golden.cases, file);
}

#[test]
fn tiny_byte_level_vocab_matches_transformers() {
    check_tiny("tiny_gpt2.json");
}

#[test]
fn tiny_sentencepiece_vocab_with_derived_merges_matches_transformers() {
    check_tiny("tiny_llama.json");
}

#[test]
fn smollm2_matches_transformers() {
    let golden = load(&root().join("fixtures/tokenizer/smollm2_golden.json"));
    assert!(golden.cases.len() >= 30, "too few golden strings; {HINT}");
    let dir = std::env::var_os("INTERVENE_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/smollm2"));
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        eprintln!(
            "skipping smollm2_matches_transformers: {} not found (run scripts/demo.sh to import SmolLM2)",
            path.display()
        );
        return;
    }
    let tokenizer = Tokenizer::from_file(&path).expect("load the imported tokenizer.json");
    assert_eq!(tokenizer.vocab_size(), 49152, "SmolLM2 has 49152 tokens");
    check_tokenizer(&tokenizer, &golden.cases, "SmolLM2-135M-Instruct.Q4_1.gguf");
}
