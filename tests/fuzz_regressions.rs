//! Replays every committed input under fixtures/fuzz_regressions/<target>/ through the same
//! body the fuzz target runs (fuzz/harness.rs): crashes the fuzzer found (`crash-*`, each fixed)
//! and hand-made hostile inputs (`hostile-*`, from fixtures/fuzz_regressions/gen_hostile.py).
//! Each must return without a panic; the harness asserts the properties.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fuzz_regressions")
        .join(target)
}

/// Runs `body` on every file of the target's directory; returns how many there were.
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let mut files: Vec<_> = std::fs::read_dir(dir(target))
        .unwrap_or_else(|e| panic!("{}: {e}", dir(target).display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(|| body(&bytes));
        assert!(r.is_ok(), "{target}: {} panicked", f.display());
    }
    assert!(!files.is_empty(), "{target}: no regression inputs");
    files.len()
}

#[test]
fn safetensors() {
    replay("safetensors", harness::safetensors);
}

#[test]
fn gguf() {
    replay("gguf", harness::gguf);
}

#[test]
fn gguf_import() {
    replay("gguf", harness::gguf_import);
    replay("gguf_import", harness::gguf_import);
}

#[test]
fn provenance() {
    replay("provenance", harness::provenance);
}

#[test]
fn requests() {
    replay("requests", harness::requests);
}

#[test]
fn mc() {
    replay("mc", harness::mc);
}

#[test]
fn text() {
    replay("text", harness::text);
}
