//! `intervene eval` through the real binary: the provenance record (appended atomically, id
//! unchanged, data hashed), plain HF directories (evaluated, not recorded), and bad input
//! (exit 2 naming the file and line).

mod common;

use std::path::{Path, PathBuf};

use common::{copy_dir, fixture, intervene, path_str};
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

fn provenance(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    path_str(&p).to_string()
}

#[test]
fn evaluations_are_appended_without_changing_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let before = provenance(&dir);
    let wiki = fixture("data/wikitext2_test_raw_first200.txt");
    let run = intervene(&[
        "eval",
        path_str(&dir),
        "--task",
        "ppl",
        "--data",
        path_str(&wiki),
        "--limit",
        "3",
        "-q",
    ]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.contains("perplexity") && run.stdout.contains("(recorded)"),
        "{run}"
    );
    let mc = fixture("data/mmlu/college_biology_test.csv");
    let run = intervene(&[
        "eval",
        path_str(&dir),
        "--task",
        "mc",
        "--data",
        path_str(&mc),
        "--limit",
        "5",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run}");
    let m: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(m["count"], 5);

    let after = provenance(&dir);
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["chain"], before["chain"]);
    let evals = after["evaluations"].as_array().unwrap();
    assert_eq!(evals.len(), 2);
    let (ppl, mc_rec) = (&evals[0], &evals[1]);
    assert_eq!(ppl["checkpoint"], before["id"]);
    assert_eq!(ppl["task"], "ppl");
    assert_eq!(ppl["settings"]["seqlen"], 128);
    assert_eq!(ppl["settings"]["limit"], 3);
    assert_eq!(ppl["metrics"]["windows"], 3);
    let hash = format!(
        "blake3:{}",
        blake3::hash(&std::fs::read(&wiki).unwrap()).to_hex()
    );
    assert_eq!(ppl["data"]["blake3"], hash.as_str());
    assert!(ppl["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(mc_rec["metrics"]["acc"], m["acc"]);
    assert!(
        mc_rec["metrics"].get("per_item").is_none(),
        "per-item results stay out of provenance"
    );
    // The weights are untouched and still hash to the id.
    let run = intervene(&["verify", path_str(&dir)]);
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn a_plain_hf_directory_is_evaluated_but_not_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let imported = tiny(tmp.path());
    let hf = tmp.path().join("hf");
    copy_dir(&imported, &hf);
    std::fs::remove_file(hf.join("provenance.json")).unwrap();
    let wiki = fixture("data/wikitext2_test_raw_first200.txt");
    let run = intervene(&[
        "eval",
        path_str(&hf),
        "--task",
        "ppl",
        "--data",
        path_str(&wiki),
        "--limit",
        "1",
    ]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr.contains("no provenance.json") && run.stderr.contains("not recorded"),
        "{run}"
    );
    assert!(!hf.join("provenance.json").exists());
}

#[test]
fn baseline_adds_locality_agreement() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let zsre = fixture("data/zsre_mend_train_first20.jsonl");
    let run = intervene(&[
        "eval",
        path_str(&dir),
        "--task",
        "edit",
        "--data",
        path_str(&zsre),
        "--limit",
        "3",
        "--baseline",
        path_str(&dir),
        "--json",
        "--no-record",
    ]);
    assert_eq!(run.code, 0, "{run}");
    let m: Value = serde_json::from_str(&run.stdout).unwrap();
    // The same model as its own baseline agrees everywhere.
    assert_eq!(m["locality_agreement"], 1.0);
    assert_eq!(m["count"], 3);
}

/// Runs a failing eval and checks exit 2 and the words the message must hold.
fn fails(dir: &Path, args: &[&str], needles: &[&str]) {
    let mut all = vec!["eval", path_str(dir), "--no-record"];
    all.extend_from_slice(args);
    let run = intervene(&all);
    assert_eq!(run.code, 2, "{run}");
    for n in needles {
        assert!(run.stderr.contains(n), "missing {n:?} in: {run}");
    }
}

#[test]
fn bad_input_exits_2_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let t = tmp.path();
    let empty = write(t, "empty.jsonl", "");
    fails(
        &dir,
        &["--task", "edit", "--data", &empty],
        &["empty.jsonl"],
    );
    let empty_csv = write(t, "empty_test.csv", "");
    fails(
        &dir,
        &["--task", "mc", "--data", &empty_csv],
        &["empty_test.csv"],
    );

    let good = std::fs::read_to_string(fixture("data/zsre_mend_train_first20.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    let bad_json = write(t, "bad.jsonl", &format!("{first}\n{{\"src\": \n"));
    fails(
        &dir,
        &["--task", "edit", "--data", &bad_json],
        &["bad.jsonl", "line 2"],
    );
    let bad_wmdp = write(
        t,
        "wmdp_bio_bad.jsonl",
        "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\nnot json\n",
    );
    fails(
        &dir,
        &["--task", "mc", "--data", &bad_wmdp],
        &["wmdp_bio_bad.jsonl", "line 2"],
    );

    let cols = write(t, "cols_test.csv", "q,a,b,c,d,A\nq2,a,b,c,B\n");
    fails(
        &dir,
        &["--task", "mc", "--data", &cols],
        &["cols_test.csv", "line 2", "5 columns"],
    );
    let letter = write(t, "letter_test.csv", "q,a,b,c,d,A\nq2,a,b,c,d,E\n");
    fails(
        &dir,
        &["--task", "mc", "--data", &letter],
        &["letter_test.csv", "line 2", "\"E\""],
    );
    let index = write(
        t,
        "wmdp_bio_idx.jsonl",
        "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n",
    );
    fails(
        &dir,
        &["--task", "mc", "--data", &index],
        &["wmdp_bio_idx.jsonl", "line 1", "out of range"],
    );

    let short = write(t, "short.txt", "A few words only.\n");
    fails(
        &dir,
        &["--task", "ppl", "--data", &short],
        &["short.txt", "shorter than one window"],
    );
    let blank = write(t, "blank.txt", "\n\n");
    fails(
        &dir,
        &["--task", "ppl", "--data", &blank],
        &["blank.txt", "empty"],
    );

    let wiki = fixture("data/wikitext2_test_raw_first200.txt");
    fails(
        &dir,
        &[
            "--task",
            "ppl",
            "--data",
            path_str(&wiki),
            "--seqlen",
            "4096",
        ],
        &["--seqlen", "context"],
    );
    fails(
        &dir,
        &[
            "--task",
            "ppl",
            "--data",
            path_str(&wiki),
            "--offset",
            "100000",
        ],
        &["--offset"],
    );
    let mc = fixture("data/mmlu/college_biology_test.csv");
    fails(
        &dir,
        &["--task", "mc", "--data", path_str(&mc), "--limit", "0"],
        &["--limit"],
    );
    let other = write(
        t,
        "questions.jsonl",
        "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 1}\n",
    );
    fails(&dir, &["--task", "mc", "--data", &other], &["--subject"]);
}

/// `--device gpu` scores single-token multiple choice on the GPU backend (any adapter, the
/// software one in CI) and must choose exactly as the CPU backend; the device is recorded.
#[cfg(feature = "gpu")]
#[test]
fn multiple_choice_on_the_gpu_chooses_as_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let mc = fixture("data/mmlu/college_biology_test.csv");
    let run_on = |device: &str| {
        intervene(&[
            "--device",
            device,
            "eval",
            path_str(&dir),
            "--task",
            "mc",
            "--data",
            path_str(&mc),
            "--limit",
            "12",
            "--batch-size",
            "5",
            "--json",
            "-q",
        ])
    };
    let gpu = run_on("gpu");
    if gpu.code == 2 && gpu.stderr.contains("--device gpu") {
        assert!(
            std::env::var_os("INTERVENE_REQUIRE_GPU").is_none(),
            "INTERVENE_REQUIRE_GPU is set but: {gpu}"
        );
        eprintln!("skipping: no GPU adapter: {}", gpu.stderr.trim());
        return;
    }
    assert_eq!(gpu.code, 0, "{gpu}");
    // Opening the adapter must not leave a C library's complaint on stderr: Mesa's
    // device-select layer makes libwayland print "error: XDG_RUNTIME_DIR is invalid" on
    // a headless machine (CI), which the binary switches off (main.rs).
    assert!(!gpu.stderr.contains("XDG_RUNTIME_DIR"), "{gpu}");
    let cpu = run_on("cpu");
    assert_eq!(cpu.code, 0, "{cpu}");
    let (g, c): (Value, Value) = (
        serde_json::from_str(&gpu.stdout).unwrap(),
        serde_json::from_str(&cpu.stdout).unwrap(),
    );
    assert_eq!(g["count"], 12);
    assert_eq!(g["per_item"]["choices"], c["per_item"]["choices"]);
    assert_eq!(g["acc"], c["acc"]);
    let recs = provenance(&dir)["evaluations"].as_array().unwrap().clone();
    let devices: Vec<&str> = recs
        .iter()
        .map(|e| e["settings"]["device"].as_str().unwrap())
        .collect();
    assert!(devices[0].starts_with("gpu:"), "{devices:?}");
    assert_eq!(devices[1], "cpu");
}
