//! The bodies of the fuzz targets, shared with `tests/fuzz_regressions.rs` so a committed
//! crash input replays exactly what the fuzzer ran. Each function takes arbitrary bytes and
//! must return without panicking; the assertions are properties every accepted input keeps.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use intervene::checkpoint::gguf::{dequant, parse_bytes};
use intervene::checkpoint::import::{import, ImportPlan};
use intervene::checkpoint::{check_provenance, parse_safetensors, Checkpoint, Provenance};

/// A per-process scratch directory (fuzzers may run several jobs at once).
fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("intervene-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch directory");
    d
}

fn temp_file(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("write temp input");
    p
}

/// The safetensors header parser; every accepted tensor converts to f32.
pub fn safetensors(data: &[u8]) {
    if let Ok((tensors, _meta)) = parse_safetensors(data, Path::new("fuzz.safetensors")) {
        for t in tensors.values() {
            let v = t.dtype.to_f32(&data[t.start..t.end]);
            assert_eq!(v.len(), t.numel());
        }
    }
}

/// Larger tensors are valid but only slow the fuzzer down; the block code is the same.
const MAX_ELEMENTS: u64 = 1 << 16;

/// The GGUF container parser; every accepted tensor (up to a size) dequantises.
pub fn gguf(data: &[u8]) {
    let Ok(p) = parse_bytes(data, Path::new("fuzz.gguf")) else {
        return;
    };
    for t in &p.tensors {
        if t.numel() > MAX_ELEMENTS {
            continue;
        }
        // parse_bytes guarantees each range lies in the buffer.
        let bytes = &data[t.offset as usize..(t.offset + t.n_bytes) as usize];
        if let Ok(v) = dequant::dequantize(t.ggml_type, bytes, t.numel() as usize) {
            assert_eq!(v.len() as u64, t.numel());
        }
    }
}

/// The whole GGUF import (metadata -> config, vocabulary -> tokenizer.json, name mapping,
/// dequantisation, writing) through a temp file; what it writes must open again.
pub fn gguf_import(data: &[u8]) {
    let src = temp_file("in.gguf", data);
    let out = scratch().join("out");
    let plan = ImportPlan {
        source: src,
        output: out.clone(),
        dtype: None,
        force: true,
    };
    if import(&plan).is_ok() {
        Checkpoint::open(&out).expect("an imported checkpoint reopens");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// provenance.json parsing and verify's checks. An accepted file survives a write/read round
/// trip unchanged (verify's digests depend on re-serialising entries to the same bytes), and a
/// chain the tool extends verifies its own new entry.
pub fn provenance(data: &[u8]) {
    let path = Path::new("provenance.json");
    let Ok(p) = Provenance::from_bytes(data, path) else {
        return;
    };
    let _ = check_provenance(&p, &p.id, None, path);
    let _ = check_provenance(&p, "blake3:00", Some(&BTreeMap::new()), path);
    let again = Provenance::from_bytes(&p.to_json_bytes(), path).expect("our own output parses");
    assert_eq!(p, again, "write/read round trip changed the provenance");
    if let Some(last) = p.chain.last() {
        let mut step = last.clone();
        step.parent = Some(p.id.clone());
        step.output = "blake3:child".into();
        let child = p.child(step);
        let (problems, _) = check_provenance(&child, "blake3:child", None, path);
        let last = format!("chain[{}]", child.chain.len() - 1);
        assert!(
            !problems
                .iter()
                .any(|m| m.contains(&last) && m.contains("content differs")),
            "{problems:?}"
        );
    }
}

/// Edit requests (zsRE, CounterFact, ROME; JSON Lines or an array) and ROME known facts.
pub fn requests(data: &[u8]) {
    let path = temp_file("requests.jsonl", data);
    let _ = intervene::data::read_requests(&path, 0, None);
    let _ = intervene::data::read_requests(&path, 1, Some(2));
    let _ = intervene::data::read_known_facts(&path);
}

/// Multiple choice: MMLU CSV (subject from the file name) and WMDP JSON Lines.
pub fn mc(data: &[u8]) {
    let _ = intervene::data::read_mc(&temp_file("fuzz_subject_test.csv", data));
    let _ = intervene::data::read_mc(&temp_file("mc.jsonl", data));
}

/// Text corpora: JSON Lines with a `text` field, plain text, and WikiText row splitting.
pub fn text(data: &[u8]) {
    let _ = intervene::data::read_text_corpus(&temp_file("text.jsonl", data));
    let _ = intervene::data::read_text_corpus(&temp_file("text.txt", data));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = intervene::data::wikitext_rows(s);
        let _ = intervene::data::wikitext_join(s);
    }
}
