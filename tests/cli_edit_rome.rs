//! `intervene rome` and `intervene memit` through the real binary on the tiny fixture: the
//! output checkpoint and its step record, determinism, reuse of the cached covariance, and bad
//! input (exit 2 naming the record or flag, nothing written).

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, intervene, path_str, Run};
use serde_json::Value;

fn tiny(tmp: &Path) -> PathBuf {
    let dir = tmp.join("tiny");
    let run = intervene(&[
        "import",
        path_str(&fixture("tiny/tiny.gguf")),
        "-o",
        path_str(&dir),
    ]);
    assert_eq!(run.code, 0, "{run}");
    dir
}

/// Short CounterFact-style requests: the tiny model's context is 128 tokens and its
/// vocabulary is mostly bytes.
const REQUESTS: &str = r#"{"case_id": 1, "prompt": "Paris is in", "subject": "Paris", "target_new": "Rome"}
{"case_id": 2, "prompt": "The cat eats", "subject": "cat", "target_new": "fish"}
{"case_id": 3, "prompt": "Bob plays the", "subject": "Bob", "target_new": "drum"}
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    path_str(&p).to_string()
}

fn provenance(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap()
}

fn edit(
    method: &str,
    input: &Path,
    out: &Path,
    requests: &str,
    cache: &Path,
    extra: &[&str],
) -> Run {
    let corpus = fixture("data/c4_en_validation_first94.jsonl");
    let mut args = vec![
        method,
        path_str(input),
        "-o",
        path_str(out),
        "--requests",
        requests,
        "--stats-corpus",
        path_str(&corpus),
        "--stats-samples",
        "8",
        "--stats-seqlen",
        "32",
        "--cache-dir",
        path_str(cache),
        "--steps",
        "6",
        "--json",
    ];
    args.extend_from_slice(extra);
    intervene(&args)
}

fn tensor_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn rome_writes_a_recorded_edit_deterministically_and_reuses_the_statistic() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tiny(tmp.path());
    let req = write(tmp.path(), "req.jsonl", REQUESTS);
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let run = edit(
        "rome",
        &input,
        &a,
        &req,
        &cache,
        &["--limit", "2", "--layer", "0"],
    );
    assert_eq!(run.code, 0, "{run}");
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    let report = &out["report"];
    assert_eq!(report["batch"]["count"], 2);
    assert_eq!(report["stats"][0]["reused"], false);
    let per = report["method"]["requests"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    for r in per {
        // The update maps the plain prompt's key to v* (f32 arithmetic).
        assert!(r["residual_after"].as_f64().unwrap() < 1e-3, "{r}");
        assert!(r["update_norm"].as_f64().unwrap() > 0.0);
    }
    // 21 templates: "{}" and two generated groups of 10.
    let groups = report["templates"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(
        groups[1].as_array().unwrap().len() + groups[2].as_array().unwrap().len(),
        20
    );

    let prov = provenance(&a);
    let step = prov["chain"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(step["op"], "rome");
    assert_eq!(step["category"], "edit");
    assert_eq!(step["output"], out["id"]);
    assert_eq!(step["params"]["layers"], serde_json::json!([0]));
    assert_eq!(step["params"]["v_lr"], 0.5);
    assert_eq!(step["params"]["mom2_adjustment"], true);
    let roles: Vec<&str> = step["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["requests", "stats_corpus", "covariance layer 0"]);
    let cov_hash = step["inputs"][2]["blake3"].clone();
    assert_eq!(cov_hash, report["stats"][0]["blake3"]);

    // Same input, flags and seed: same id, bit for bit; the statistic comes from the cache.
    let run = edit(
        "rome",
        &input,
        &b,
        &req,
        &cache,
        &["--limit", "2", "--layer", "0"],
    );
    assert_eq!(run.code, 0, "{run}");
    let out_b: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out_b["id"], out["id"]);
    assert_eq!(out_b["report"]["stats"][0]["reused"], true);
    assert_eq!(out_b["report"]["stats"][0]["blake3"], cov_hash);
    assert_eq!(tensor_bytes(&a), tensor_bytes(&b));

    // Another seed samples other templates: another edit.
    let c = tmp.path().join("c");
    let run = edit(
        "rome",
        &input,
        &c,
        &req,
        &cache,
        &["--limit", "2", "--layer", "0", "--seed", "7"],
    );
    assert_eq!(run.code, 0, "{run}");
    let out_c: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_ne!(out_c["id"], out["id"]);

    // `verify` accepts the result.
    let run = intervene(&["verify", path_str(&a)]);
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn memit_edits_the_layer_range_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tiny(tmp.path());
    let req = write(tmp.path(), "req.jsonl", REQUESTS);
    let cache = tmp.path().join("cache");
    let out_dir = tmp.path().join("m");
    let run = edit(
        "memit",
        &input,
        &out_dir,
        &req,
        &cache,
        &["--layers", "0-1"],
    );
    assert_eq!(run.code, 0, "{run}");
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    let m = &out["report"]["method"];
    assert_eq!(m["values"].as_array().unwrap().len(), 3);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    // The residual to the targets shrinks as the layers are updated.
    let r0 = layers[0]["residual_norm"].as_f64().unwrap();
    assert!(m["final_residual_norm"].as_f64().unwrap() < r0, "{m}");
    let step = provenance(&out_dir)["chain"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(step["op"], "memit");
    // The default λ is the reference's 15000 scaled by the MLP width (d_ff / 11008).
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("config.json")).unwrap()).unwrap();
    let d_ff = cfg["intermediate_size"].as_f64().unwrap();
    let lambda = step["params"]["mom2_update_weight"].as_f64().unwrap();
    assert!(
        (lambda - 15000.0 * d_ff / 11008.0).abs() < 1e-9 * lambda,
        "λ {lambda} for d_ff {d_ff}"
    );
    assert_eq!(step["params"]["layers"], serde_json::json!([0, 1]));
    assert_eq!(out["report"]["stats"].as_array().unwrap().len(), 2);
    // Only the two down_proj tensors changed.
    let run = intervene(&["inspect", path_str(&out_dir), "--json"]);
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn bad_input_exits_2_naming_the_record_or_flag_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tiny(tmp.path());
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let cases: Vec<(&str, String, Vec<&str>, Vec<&str>)> = vec![
        (
            "rome",
            write(
                tmp.path(),
                "nosubj.jsonl",
                "{\"prompt\": \"Paris is in\", \"subject\": \"Paris\", \"target_new\": \"Rome\"}\n{\"prompt\": \"The dog runs\", \"subject\": \"cat\", \"target_new\": \"x\"}\n",
            ),
            vec![],
            vec!["line 2", "subject"],
        ),
        (
            "memit",
            write(
                tmp.path(),
                "empty.jsonl",
                "{\"prompt\": \"Paris is in\", \"subject\": \"Paris\", \"target_new\": \"\"}\n",
            ),
            vec!["--layers", "0"],
            vec!["line 1", "target_new"],
        ),
        (
            "rome",
            write(tmp.path(), "ok.jsonl", REQUESTS),
            vec!["--layer", "2"],
            vec!["--layer", "out of range"],
        ),
        (
            "memit",
            write(tmp.path(), "ok2.jsonl", REQUESTS),
            vec!["--layers", "1-4"],
            vec!["--layers"],
        ),
        (
            "memit",
            write(tmp.path(), "ok3.jsonl", REQUESTS),
            vec!["--layer", "1"],
            vec!["--layer"],
        ),
        (
            "rome",
            write(tmp.path(), "ok4.jsonl", REQUESTS),
            vec!["--offset", "3"],
            vec!["offset 3", "past the end"],
        ),
    ];
    for (method, req, extra, needles) in cases {
        let run = edit(method, &input, &out, &req, &cache, &extra);
        assert_eq!(run.code, 2, "{method} {extra:?}: {run}");
        for n in needles {
            assert!(
                run.stderr.contains(n),
                "{method} {extra:?}: `{n}` missing: {run}"
            );
        }
        assert!(!out.exists(), "{method} {extra:?} wrote output");
    }
    // No built-in corpus path: the flag is required where the covariance is used, and the
    // error points at the sample shipped in the repository.
    let req = write(tmp.path(), "ok5.jsonl", REQUESTS);
    for method in ["memit", "rome"] {
        let run = intervene(&[
            method,
            path_str(&input),
            "-o",
            path_str(&out),
            "--requests",
            &req,
            "--cache-dir",
            path_str(&cache),
        ]);
        assert_eq!(run.code, 2, "{method} without --stats-corpus: {run}");
        for n in ["--stats-corpus", "data/calibration/wikitext103"] {
            assert!(run.stderr.contains(n), "{method}: `{n}` missing: {run}");
        }
        assert!(
            !out.exists(),
            "{method} without --stats-corpus wrote output"
        );
    }
}
