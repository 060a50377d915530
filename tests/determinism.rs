//! Determinism through the real binary: the same intervention with the same seed gives the
//! same id across runs and across `--threads 1` and `--threads 2` on the CPU backend. The
//! model is synthetic and sized (hidden 256, intermediate 704, 64-token windows) so the
//! matrix products and the row-parallel loops do split across two threads; evaluation leaves
//! the id and the weights untouched, and its metrics do not depend on the thread count either.

mod common;

use std::path::{Path, PathBuf};

use common::synth::{char_tokenizer, corpus, write_model, Dims};
use common::{fixture, intervene, path_str};
use serde_json::Value;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
    calib: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let src = root.join("src");
    let dims = Dims {
        hidden: 256,
        intermediate: 704,
        layers: 2,
        heads: 8,
        kv_heads: 4,
        vocab: 320,
    };
    write_model(&src, &dims, 11);
    std::fs::write(
        src.join("tokenizer.json"),
        serde_json::to_vec(&char_tokenizer()).unwrap(),
    )
    .unwrap();
    let calib = root.join("calib.jsonl");
    std::fs::write(&calib, corpus(12, 400, 5)).unwrap();
    Setup {
        _tmp: tmp,
        root,
        src,
        calib,
    }
}

/// Runs `args` (with OUT appended) under threads 1, 2, 2 and returns the three outputs after
/// checking their ids agree and verify passes.
fn three(s: &Setup, tag: &str, args: &[&str]) -> Vec<PathBuf> {
    let mut outs = Vec::new();
    let mut ids = Vec::new();
    for (i, threads) in ["1", "2", "2"].iter().enumerate() {
        let out = s.root.join(format!("{tag}-{i}"));
        let mut a = vec!["-q", "--device", "cpu", "--seed", "3", "--threads", threads];
        a.extend_from_slice(args);
        a.extend(["-o", path_str(&out)]);
        let r = intervene(&a);
        assert_eq!(r.code, 0, "{a:?}: {r}");
        ids.push(r.stdout.trim().to_string());
        let v = intervene(&["verify", "--no-inputs", path_str(&out)]);
        assert_eq!(v.code, 0, "{v}");
        outs.push(out);
    }
    assert!(ids[0].starts_with("blake3:"), "{ids:?}");
    assert_eq!(ids[0], ids[1], "{tag}: --threads 1 vs --threads 2");
    assert_eq!(ids[1], ids[2], "{tag}: the same command twice");
    outs
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

fn prov(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap()
}

#[test]
fn interventions_give_the_same_id_across_runs_and_thread_counts() {
    let s = setup();
    let base = three(&s, "import", &["import", path_str(&s.src)]).remove(0);
    std::fs::copy(s.src.join("tokenizer.json"), base.join("tokenizer.json")).unwrap();
    let b = path_str(&base);
    let calib = [
        "--calib",
        path_str(&s.calib),
        "--calib-samples",
        "8",
        "--seqlen",
        "64",
    ];
    let with_calib = |m: &'static str, rest: &[&'static str]| {
        let mut v: Vec<&str> = vec![m, b];
        v.extend_from_slice(&calib);
        v.extend_from_slice(rest);
        v
    };
    for (tag, args) in [
        ("rtn", vec!["rtn", b, "--bits", "4", "--group-size", "32"]),
        ("magnitude", vec!["magnitude", b, "--sparsity", "0.5"]),
        (
            "gptq",
            with_calib("gptq", &["--group-size", "64", "--act-order"]),
        ),
        ("wanda", with_calib("wanda", &["--sparsity", "0.5"])),
        ("sparsegpt", with_calib("sparsegpt", &["--pattern", "2:4"])),
        (
            "awq",
            with_calib(
                "awq",
                &[
                    "--group-size",
                    "64",
                    "--awq-search-samples",
                    "2",
                    "--awq-search-seqlen",
                    "32",
                ],
            ),
        ),
    ] {
        let outs = three(&s, tag, &args);
        assert_ne!(weights(&outs[0]), weights(&base), "{tag} changed nothing");
        // Bitwise the same files, not just the same id.
        assert_eq!(weights(&outs[0]), weights(&outs[1]), "{tag}");
    }
    // A GGUF import (dequantisation of Q8_0 blocks) too.
    three(
        &s,
        "gguf",
        &["import", path_str(&fixture("tiny/tiny_q8_0.gguf"))],
    );
}

#[test]
fn evaluation_changes_neither_the_id_nor_the_weights_and_is_thread_independent() {
    let s = setup();
    let base = s.root.join("base");
    let r = intervene(&["-q", "import", path_str(&s.src), "-o", path_str(&base)]);
    assert_eq!(r.code, 0, "{r}");
    let id = prov(&base)["id"].clone();
    let before = weights(&base);
    let mut metrics = Vec::new();
    for threads in ["1", "2"] {
        let r = intervene(&[
            "-q",
            "--device",
            "cpu",
            "--threads",
            threads,
            "eval",
            path_str(&base),
            "--task",
            "ppl",
            "--data",
            path_str(&s.calib),
            "--seqlen",
            "64",
            "--limit",
            "6",
            "--json",
        ]);
        assert_eq!(r.code, 0, "{r}");
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        metrics.push(v["ppl"].clone());
    }
    assert!(metrics[0].as_f64().is_some(), "{metrics:?}");
    assert_eq!(
        metrics[0], metrics[1],
        "ppl differs between --threads 1 and 2"
    );
    let p = prov(&base);
    assert_eq!(p["id"], id);
    assert_eq!(p["evaluations"].as_array().unwrap().len(), 2);
    assert_eq!(weights(&base), before);
    let v = intervene(&["verify", path_str(&base)]);
    assert_eq!(v.code, 0, "{v}");
    assert!(v.stdout.contains(id.as_str().unwrap()), "{v}");
}
