//! `intervene ft` and `intervene lora` through the real binary on the tiny fixture: only the
//! selected tensors change (every other tensor bitwise equal), the loss on the targets falls,
//! the norm constraint bounds the change, the merged LoRA delta has rank <= r, the step record
//! names the requests and every setting, runs are deterministic, and bad input exits 2 naming
//! the record or flag with nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, intervene, path_str};
use intervene::checkpoint::Checkpoint;
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

fn zsre() -> String {
    path_str(&fixture("data/zsre_mend_train_first20.jsonl")).to_string()
}

/// Runs an edit command with `--json -q`; returns its JSON output.
fn edit(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--json", "-q"]);
    let run = intervene(&all);
    assert_eq!(run.code, 0, "{run}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"))
}

/// Names of the tensors whose stored bytes differ between two checkpoints.
fn changed(a: &Path, b: &Path) -> Vec<String> {
    let (a, b) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    let names: Vec<String> = a.names().map(String::from).collect();
    assert_eq!(names, b.names().map(String::from).collect::<Vec<_>>());
    names
        .into_iter()
        .filter(|n| a.bytes(n).unwrap().1 != b.bytes(n).unwrap().1)
        .collect()
}

/// `after - before` of one f32 tensor, in f64.
fn delta(before: &Path, after: &Path, name: &str) -> (Vec<f64>, Vec<usize>) {
    let read = |d: &Path| {
        let c = Checkpoint::open(d).unwrap();
        let (info, bytes) = c.bytes(name).unwrap();
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v, info.shape.clone())
    };
    let ((a, shape), (b, _)) = (read(after), read(before));
    (
        a.iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) - f64::from(*y))
            .collect(),
        shape,
    )
}

fn last_step(dir: &Path) -> Value {
    let p: Value =
        serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap();
    p["chain"].as_array().unwrap().last().unwrap().clone()
}

#[test]
fn ft_changes_only_the_selected_down_proj_and_lowers_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let out = tmp.path().join("ft");
    let z = zsre();
    let args = [
        "ft",
        path_str(&dir),
        "-o",
        path_str(&out),
        "--requests",
        &z,
        "--offset",
        "2",
        "--limit",
        "3",
        "--layers",
        "1",
        "--steps",
        "6",
        "--lr",
        "1e-3",
        "--loss",
        "target",
    ];
    let r = edit(&args);
    assert_eq!(
        changed(&dir, &out),
        vec!["model.layers.1.mlp.down_proj.weight".to_string()]
    );
    let rep = &r["report"];
    let curve: Vec<f64> = rep["loss_per_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(curve.len(), 6);
    assert!(curve.windows(2).all(|w| w[1] < w[0]), "{curve:?}");
    let (i, f) = (
        rep["initial_loss"].as_f64().unwrap(),
        rep["final_loss"].as_f64().unwrap(),
    );
    assert!(f < i - 0.1, "loss {i} -> {f}");
    // The engine's first-step loss is the inference forward's loss before training.
    assert!((curve[0] - i).abs() <= 1e-4 * i, "{} vs {i}", curve[0]);

    let step = last_step(&out);
    assert_eq!(
        (step["op"].as_str(), step["category"].as_str()),
        (Some("ft"), Some("edit"))
    );
    assert_eq!(step["output"], r["id"]);
    let p = &step["params"];
    assert_eq!(p["layers"], serde_json::json!([1, 2]));
    assert_eq!(
        (p["steps"].as_u64(), p["loss"].as_str()),
        (Some(6), Some("target_new"))
    );
    assert_eq!(p["requests"]["offset"], 2);
    assert_eq!(p["requests"]["count"], 3);
    assert_eq!(p["requests"]["lines"], serde_json::json!([3, 4, 5]));
    assert_eq!(p["requests"]["format"], "zsRE (MEND)");
    let inputs = step["inputs"].as_array().unwrap();
    assert_eq!(inputs[0]["role"], "requests");
    assert_eq!(
        inputs[0]["blake3"].as_str().unwrap(),
        intervene::checkpoint::hash_file(&fixture("data/zsre_mend_train_first20.jsonl")).unwrap()
    );
    assert!(
        step["report"]["delta_fro"]["model.layers.1.mlp.down_proj.weight"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let run = intervene(&["verify", path_str(&out)]);
    assert_eq!(run.code, 0, "{run}");

    // Same input and flags: the same id, bit for bit.
    let out2 = tmp.path().join("ft2");
    let mut again = args.to_vec();
    again[3] = path_str(&out2);
    assert_eq!(edit(&again)["id"], r["id"]);
}

#[test]
fn ft_default_layer_and_norm_constraint_bound_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let out = tmp.path().join("ftn");
    let z = zsre();
    let eps = 1e-3f64;
    let r = edit(&[
        "ft",
        path_str(&dir),
        "-o",
        path_str(&out),
        "--requests",
        &z,
        "--limit",
        "2",
        "--steps",
        "5",
        "--lr",
        "1e-3",
        "--norm-constraint",
        "1e-3",
    ]);
    // round(21 * 2 / 32) = 1: the tiny model's EasyEdit-scaled layer.
    let name = "model.layers.1.mlp.down_proj.weight";
    assert_eq!(changed(&dir, &out), vec![name.to_string()]);
    let (d, _) = delta(&dir, &out, name);
    let max = d.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    // The bound is w0 +- eps in f32: one f32 ulp of the largest weight (|w| < 1) over eps.
    assert!(max <= eps + f64::from(f32::EPSILON), "max |dW| {max}");
    assert!(max >= 0.99 * eps, "the constraint never bound: {max}");
    assert_eq!(r["report"]["optimizer_steps"], 5);
}

/// Rank by Gaussian elimination with full pivoting; pivots under `tol * max|x|` are zero.
fn rank(m: &[f64], rows: usize, cols: usize, tol: f64) -> usize {
    let mut a = m.to_vec();
    let scale = a.iter().fold(0.0f64, |s, x| s.max(x.abs()));
    let (mut rset, mut cset) = (vec![false; rows], vec![false; cols]);
    for r in 0..rows.min(cols) {
        let mut best = (0.0, 0, 0);
        for i in (0..rows).filter(|&i| !rset[i]) {
            for j in (0..cols).filter(|&j| !cset[j]) {
                if a[i * cols + j].abs() > best.0 {
                    best = (a[i * cols + j].abs(), i, j);
                }
            }
        }
        if best.0 <= tol * scale {
            return r;
        }
        let (_, pi, pj) = best;
        rset[pi] = true;
        cset[pj] = true;
        for i in (0..rows).filter(|&i| !rset[i]) {
            let f = a[i * cols + pj] / a[pi * cols + pj];
            for j in 0..cols {
                a[i * cols + j] -= f * a[pi * cols + j];
            }
        }
    }
    rows.min(cols)
}

#[test]
fn lora_merges_rank_r_deltas_into_the_targets_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let out = tmp.path().join("lora");
    let z = zsre();
    let args = [
        "lora",
        path_str(&dir),
        "-o",
        path_str(&out),
        "--requests",
        &z,
        "--limit",
        "3",
        "--rank",
        "2",
        "--alpha",
        "4",
        "--steps",
        "6",
        "--lr",
        "1e-2",
        "--seed",
        "3",
    ];
    let r = edit(&args);
    let mut want: Vec<String> = (0..2)
        .flat_map(|l| {
            ["q_proj", "v_proj"].map(|p| format!("model.layers.{l}.self_attn.{p}.weight"))
        })
        .collect();
    want.sort();
    let mut got = changed(&dir, &out);
    got.sort();
    assert_eq!(got, want);
    let rep = &r["report"];
    let (i, f) = (
        rep["initial_loss"].as_f64().unwrap(),
        rep["final_loss"].as_f64().unwrap(),
    );
    assert!(f < i - 0.1, "loss {i} -> {f}");
    let mut sq = 0.0;
    for name in &want {
        let (d, shape) = delta(&dir, &out, name);
        let rk = rank(&d, shape[0], shape[1], 1e-4);
        assert!(rk <= 2 && rk > 0, "{name}: rank {rk}");
        let fro = rep["delta_fro"][name].as_f64().unwrap();
        let direct = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (fro - direct).abs() <= 1e-3 * direct,
            "{name}: {fro} vs {direct}"
        );
        sq += fro * fro;
    }
    assert!((rep["delta_fro_total"].as_f64().unwrap() - sq.sqrt()).abs() <= 1e-9 * sq.sqrt());
    let p = &last_step(&out)["params"];
    assert_eq!(
        (p["rank"].as_u64(), p["alpha"].as_f64()),
        (Some(2), Some(4.0))
    );
    assert_eq!(p["targets"], serde_json::json!(["q_proj", "v_proj"]));
    assert_eq!(
        (p["seed"].as_u64(), p["layers"].clone()),
        (Some(3), serde_json::json!([0, 2]))
    );

    let mut again = args.to_vec();
    let out2 = tmp.path().join("lora2");
    again[3] = path_str(&out2);
    assert_eq!(edit(&again)["id"], r["id"], "same seed, same id");
    let out3 = tmp.path().join("lora3");
    again[3] = path_str(&out3);
    let last = again.len() - 1;
    again[last] = "4";
    assert_ne!(edit(&again)["id"], r["id"], "another seed, another init");

    // --stop-loss: recorded (default 1e-2); an epoch whose mean loss is below it takes no
    // step and ends the run, so a bound above the initial loss stops at once, unchanged.
    assert_eq!(p["stop_loss"].as_f64(), Some(1e-2));
    let losses = rep["loss_per_step"].as_array().unwrap();
    let stopped = rep["early_stopped"].as_bool().unwrap();
    let last_loss = losses.last().unwrap().as_f64().unwrap();
    assert_eq!(stopped, losses.len() < 6 && last_loss < 1e-2, "{rep}");
    let out4 = tmp.path().join("lora4");
    again[3] = path_str(&out4);
    again.extend_from_slice(&["--stop-loss", "100"]);
    let r4 = edit(&again);
    let rep4 = &r4["report"];
    assert_eq!(rep4["epochs_run"].as_u64(), Some(1), "{rep4}");
    assert_eq!(rep4["early_stopped"].as_bool(), Some(true), "{rep4}");
    assert_eq!(rep4["delta_fro_total"].as_f64(), Some(0.0), "{rep4}");
    assert_eq!(
        last_step(&out4)["params"]["stop_loss"].as_f64(),
        Some(100.0)
    );
}

/// A failing command: exit 2, the words the message must hold, nothing written.
fn fails(args: &[&str], out: &Path, needles: &[&str]) {
    let run = intervene(args);
    assert_eq!(run.code, 2, "{run}");
    for n in needles {
        assert!(run.stderr.contains(n), "missing {n:?} in: {run}");
    }
    assert!(!out.exists(), "{} written", out.display());
}

#[test]
fn bad_input_exits_2_naming_the_record_or_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path());
    let t = tmp.path();
    let d = path_str(&dir);
    let out = t.join("out");
    let o = path_str(&out);
    let z = zsre();
    let write = |name: &str, text: &str| {
        let p = t.join(name);
        std::fs::write(&p, text).unwrap();
        path_str(&p).to_string()
    };
    fails(
        &["ft", d, "-o", o, "--requests", &z, "--layers", "2"],
        &out,
        &["--layers"],
    );
    fails(
        &["lora", d, "-o", o, "--requests", &z, "--layers", "0-5"],
        &out,
        &["--layers"],
    );
    fails(
        &[
            "lora",
            d,
            "-o",
            o,
            "--requests",
            &z,
            "--targets",
            "q_proj,foo_proj",
        ],
        &out,
        &["--targets", "foo_proj"],
    );
    fails(
        &["ft", d, "-o", o, "--requests", &z, "--steps", "0"],
        &out,
        &["--steps"],
    );
    fails(
        &["ft", d, "-o", o, "--requests", &z, "--norm-constraint", "0"],
        &out,
        &["--norm-constraint"],
    );
    let empty = write("empty.jsonl", "");
    fails(
        &["ft", d, "-o", o, "--requests", &empty],
        &out,
        &["empty.jsonl"],
    );
    let good = std::fs::read_to_string(fixture("data/counterfact_easyedit_first20.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    let bad = write("bad.jsonl", &format!("{first}\n{{\"prompt\": \n"));
    fails(
        &["lora", d, "-o", o, "--requests", &bad],
        &out,
        &["bad.jsonl", "line 2"],
    );
    let mut rec: Value = serde_json::from_str(first).unwrap();
    rec["target_new"] = Value::from("  ");
    let blank = write("blank.jsonl", &format!("{first}\n{rec}\n"));
    fails(
        &["ft", d, "-o", o, "--requests", &blank],
        &out,
        &["blank.jsonl", "line 2", "target_new"],
    );
    fails(
        &["ft", d, "-o", o, "--requests", &z, "--offset", "20"],
        &out,
        &["offset"],
    );
    let orphan = t.join("no/such/dir/out");
    fails(
        &["ft", d, "-o", path_str(&orphan), "--requests", &z],
        &orphan,
        &["--output", "does not exist"],
    );
}
