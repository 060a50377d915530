//! `intervene eval` against the transformers reference in `fixtures/eval/golden.json`
//! (written by `fixtures/gen_eval_reference.py`): identical multiple-choice choices, perplexity
//! within 0.1%, identical edit F1 per prompt and teacher-forced accuracy. The tiny fixture
//! always runs; SmolLM2 runs when `models/smollm2` exists.

mod common;

use std::path::Path;

use common::{fixture, intervene, path_str, repo};
use serde_json::Value;

fn golden() -> Value {
    let text = std::fs::read_to_string(fixture("eval/golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden json")
}

fn eval_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["eval", path_str(dir), "--no-record", "--json", "-q"];
    all.extend_from_slice(args);
    let run = intervene(&all);
    assert_eq!(run.code, 0, "{run}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"))
}

fn data(rel: &str) -> String {
    path_str(&fixture(&format!("data/{rel}"))).to_string()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

fn check_mc(dir: &Path, g: &Value, file: &str, limit: Option<u64>) {
    check_mc_with(dir, g, file, limit, &[]);
}

fn check_mc_with(dir: &Path, g: &Value, file: &str, limit: Option<u64>, extra: &[&str]) {
    let limit_s = limit.map(|l| l.to_string());
    let mut args = vec!["--task", "mc", "--data", file];
    args.extend_from_slice(extra);
    if let Some(l) = &limit_s {
        args.extend(["--limit", l.as_str()]);
    }
    let m = eval_json(dir, &args);
    assert_eq!(
        m["per_item"]["choices"], g["choices"],
        "choices differ on {file}"
    );
    assert!(close(
        m["acc"].as_f64().unwrap(),
        g["acc"].as_f64().unwrap(),
        1e-12
    ));
    assert_eq!(m["count"], g["count"]);
}

fn check_ppl(dir: &Path, g: &Value) {
    let seqlen = g["seqlen"].to_string();
    let mut args = vec!["--task", "ppl", "--seqlen", seqlen.as_str()];
    let d = data("wikitext2_test_raw_first200.txt");
    args.extend(["--data", d.as_str()]);
    let limit = g["limit"].as_u64().map(|l| l.to_string());
    if let Some(l) = &limit {
        args.extend(["--limit", l.as_str()]);
    }
    let m = eval_json(dir, &args);
    let (ours, theirs) = (m["ppl"].as_f64().unwrap(), g["ppl"].as_f64().unwrap());
    assert!(
        close(ours, theirs, 1e-3),
        "ppl {ours} vs reference {theirs}"
    );
    assert_eq!(m["windows"], g["windows"]);
}

fn check_edit(dir: &Path, g: &Value, file: &str) {
    let (limit, max_len) = (g["limit"].to_string(), g["max_length"].to_string());
    let m = eval_json(
        dir,
        &[
            "--task",
            "edit",
            "--data",
            file,
            "--limit",
            &limit,
            "--max-length",
            &max_len,
        ],
    );
    let ours = m["per_item"].as_array().unwrap();
    let theirs = g["per_item"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
        for key in [
            "edit_f1",
            "rephrase_f1",
            "locality_f1",
            "locality_ids",
            "edit_acc_tf",
        ] {
            assert_eq!(o[key], t[key], "{file} request {i}: {key}");
        }
        let (a, b) = (
            o["target_logprob"].as_f64().unwrap(),
            t["target_logprob"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-3 * b.abs().max(1.0),
            "{file} request {i}: logprob {a} vs {b}"
        );
    }
    for key in ["edit_success", "generalization", "locality", "edit_acc_tf"] {
        let (a, b) = (m[key].as_f64().unwrap(), g[key].as_f64().unwrap());
        assert!(close(a, b, 1e-12), "{file}: {key} {a} vs {b}");
    }
}

fn check_case(dir: &Path, g: &Value) {
    check_mc_with(
        dir,
        &g["cloze"],
        &data("facts_cloze_20.jsonl"),
        None,
        &["--prompt", "cloze"],
    );
    check_mc(
        dir,
        &g["mmlu"],
        &data("mmlu/college_biology_test.csv"),
        None,
    );
    check_mc(
        dir,
        &g["wmdp"],
        &data("wmdp_bio_first20.jsonl"),
        g["wmdp"]["limit"].as_u64(),
    );
    check_ppl(dir, &g["ppl"]);
    check_edit(dir, &g["zsre"], &data("zsre_mend_train_first20.jsonl"));
    if !g["counterfact"].is_null() {
        check_edit(
            dir,
            &g["counterfact"],
            &data("counterfact_easyedit_first20.jsonl"),
        );
    }
}

#[test]
fn tiny_fixture_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let run = intervene(&[
        "import",
        path_str(&fixture("tiny/tiny.gguf")),
        "-o",
        path_str(&dir),
    ]);
    assert_eq!(run.code, 0, "{run}");
    check_case(&dir, &golden()["tiny"]);
}

#[test]
fn smollm2_matches_transformers() {
    let dir = repo().join("models/smollm2");
    if !dir.join("config.json").is_file() {
        eprintln!(
            "skipped: {} is absent (symlink models/ to the imported models)",
            dir.display()
        );
        return;
    }
    let g = golden();
    if g["smollm2"].is_null() {
        eprintln!("skipped: golden.json has no SmolLM2 case (regenerate with the model present)");
        return;
    }
    check_case(&dir, &g["smollm2"]);
}
