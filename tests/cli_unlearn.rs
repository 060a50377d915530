//! The unlearning subcommands through the real binary on the tiny fixture (2 layers): each runs
//! and verifies, records its settings and corpus hashes, changes only the tensors it trains,
//! and gives the same id across runs and thread counts; bad input exits 2, names the flag or
//! file, and writes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{fixture, intervene, path_str, split_safetensors};
use serde_json::{json, Value};

const CHARS: &str = "abcdefghijklmnopqrstuvwxyz .,?";

fn char_tokenizer() -> Value {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), json!(0));
    for (i, c) in CHARS.chars().enumerate() {
        vocab.insert(c.to_string(), json!(i + 1));
    }
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    })
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
    forget: PathBuf,
    forget_b: PathBuf,
    retain: PathBuf,
    tofu: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let base = root.join("base");
    let r = intervene(&[
        "import",
        path_str(&fixture("tiny/hf")),
        "-o",
        path_str(&base),
    ]);
    assert_eq!(r.code, 0, "{r}");
    std::fs::write(
        base.join("tokenizer.json"),
        serde_json::to_vec(&char_tokenizer()).unwrap(),
    )
    .unwrap();
    let jsonl = |name: &str, docs: &[&str]| {
        let p = root.join(name);
        let body: String = docs
            .iter()
            .map(|d| format!("{}\n", json!({ "text": d })))
            .collect();
        std::fs::write(&p, body).unwrap();
        p
    };
    let forget = jsonl(
        "forget.jsonl",
        &[
            "the capital of france is paris.",
            "mount everest is in asia.",
            "the nile flows north.",
            "rome is in italy.",
        ],
    );
    let forget_b = root.join("forget_b.txt");
    std::fs::write(
        &forget_b,
        "a plain text file is one document about rivers and towns.",
    )
    .unwrap();
    let retain = jsonl(
        "retain.jsonl",
        &[
            "the violin has four strings.",
            "chess is a board game.",
            "bread is baked.",
            "owls hunt at night.",
        ],
    );
    let tofu = root.join("tofu_forget.jsonl");
    std::fs::write(
        &tofu,
        "{\"question\":\"who wrote the book?\",\"answer\":\"an author from kuwait.\"}\n{\"question\":\"what genre?\",\"answer\":\"poetry.\"}\n",
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        root,
        base,
        forget,
        forget_b,
        retain,
        tofu,
    }
}

fn tensors(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (header, data) = split_safetensors(&bytes);
    let mut out = BTreeMap::new();
    for (name, v) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let off: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
        out.insert(name.clone(), data[off[0]..off[1]].to_vec());
    }
    out
}

fn run(s: &Setup, tag: &str, threads: &str, args: &[&str]) -> (PathBuf, Value) {
    let out = s.root.join(tag);
    let mut a = vec!["--threads", threads, "--seed", "3"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", path_str(&out), "--json"]);
    let r = intervene(&a);
    assert_eq!(r.code, 0, "{r}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let r = intervene(&["verify", path_str(&out)]);
    assert_eq!(r.code, 0, "{r}");
    (out, v)
}

fn last_step(dir: &Path) -> Value {
    let p: Value =
        serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap();
    p["chain"].as_array().unwrap().last().unwrap().clone()
}

/// Runs twice (threads 2 and 1): same id; only `trained` tensors differ from the input.
fn check_method(s: &Setup, method: &str, extra: &[&str], trained: &dyn Fn(&str) -> bool) -> Value {
    let mut args = vec![method, path_str(&s.base)];
    args.extend_from_slice(extra);
    let (out1, v1) = run(s, &format!("{method}-1"), "2", &args);
    let (_, v2) = run(s, &format!("{method}-2"), "1", &args);
    assert_eq!(
        v1["id"], v2["id"],
        "{method}: not deterministic across thread counts"
    );
    let before = tensors(&s.base);
    let after = tensors(&out1);
    for (name, b) in &before {
        let same = *b == after[name];
        assert_eq!(!same, trained(name), "{method}: {name} changed={}", !same);
    }
    let step = last_step(&out1);
    assert_eq!(step["op"], method);
    assert_eq!(step["category"], "unlearn");
    v1
}

#[test]
fn ga_gd_rmu_run_record_and_change_only_their_tensors() {
    let s = setup();
    let common = [
        "--forget",
        path_str(&s.forget),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--max-len",
        "24",
    ];

    // GA: layer 1 (the upper half of 2), the final norm and the untied head.
    let mut a = common.to_vec();
    a.extend_from_slice(&["--forget", path_str(&s.tofu)]);
    let v = check_method(&s, "ga", &a, &|n| {
        n.starts_with("model.layers.1.") || n == "model.norm.weight" || n == "lm_head.weight"
    });
    let r = &v["report"];
    assert_eq!(r["curve"].as_array().unwrap().len(), 3);
    assert_eq!(
        r["forget"][1]["documents"], 2,
        "TOFU question/answer records are documents"
    );
    // The two forget files alternate.
    let files: Vec<u64> = r["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["forget_file"].as_u64().unwrap())
        .collect();
    assert_eq!(files, [0, 1, 0]);
    // GA raises the forget NLL: one batch (the whole file), seen at every step.
    let (_, v) = run(
        &s,
        "ga-rise",
        "2",
        &[
            "ga",
            path_str(&s.base),
            "--forget",
            path_str(&s.forget),
            "--batch-size",
            "4",
            "--steps",
            "3",
            "--lr",
            "1e-2",
        ],
    );
    let nll: Vec<f64> = v["report"]["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["forget_nll"].as_f64().unwrap())
        .collect();
    assert!(nll[2] > nll[1] && nll[1] > nll[0], "{nll:?}");

    // GD with explicit layers 0..1 and the retain file.
    let mut a = common.to_vec();
    a.extend_from_slice(&[
        "--retain",
        path_str(&s.retain),
        "--retain-weight",
        "2",
        "--layers",
        "0",
    ]);
    let v = check_method(&s, "gd", &a, &|n| {
        n.starts_with("model.layers.0.") || n == "model.norm.weight" || n == "lm_head.weight"
    });
    assert!(v["report"]["curve"][0]["retain_nll"].as_f64().unwrap() > 0.0);

    // RMU at layer 1: down_proj of layers 0 and 1 only; two forget files, two coefficients.
    let mut a = common.to_vec();
    a.extend_from_slice(&[
        "--forget",
        path_str(&s.forget_b),
        "--retain",
        path_str(&s.retain),
        "--layer",
        "1",
        "--steering-coef",
        "5,7",
        "--alpha",
        "10",
    ]);
    let v = check_method(&s, "rmu", &a, &|n| n.ends_with("mlp.down_proj.weight"));
    let out = s.root.join("rmu-1");
    let step = last_step(&out);
    assert_eq!(step["params"]["steering_coef"], json!([5.0, 7.0]));
    assert_eq!(step["params"]["update_layers"], json!([0, 2]));
    assert_eq!(step["params"]["alpha"], json!([10.0, 10.0]));
    // Every corpus is an input, by hash.
    let inputs = step["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 3);
    assert_eq!(inputs[0]["role"], "forget");
    assert_eq!(inputs[2]["role"], "retain");
    assert!(inputs
        .iter()
        .all(|i| i["blake3"].as_str().unwrap().len() > 32));
    assert!(v["report"]["curve"][2]["retain_loss"].as_f64().unwrap() > 0.0);

    // The default steering coefficient is a multiple of the measured activation norm.
    let (out, _) = run(
        &s,
        "rmu-auto",
        "2",
        &[
            "rmu",
            path_str(&s.base),
            "--forget",
            path_str(&s.forget),
            "--retain",
            path_str(&s.retain),
            "--steps",
            "1",
            "--steering-scale",
            "2",
        ],
    );
    let step = last_step(&out);
    let norm = step["report"]["median_token_norm"][0].as_f64().unwrap();
    let c = step["params"]["steering_coef"][0].as_f64().unwrap();
    assert!(
        norm > 0.0 && (c - 2.0 * norm).abs() < 1e-4 * c,
        "{c} vs {norm}"
    );
    assert_eq!(
        step["params"]["layer"], 0,
        "7/32 of 2 layers rounds to layer 0"
    );
    assert_eq!(step["params"]["skip_first"], 0);

    // --skip-first leaves the first position of every document out of both means: the
    // step-0 forget loss changes, and the setting is recorded.
    let skip = |tag: &str, k: &str| {
        let (out, v) = run(
            &s,
            tag,
            "2",
            &[
                "rmu",
                path_str(&s.base),
                "--forget",
                path_str(&s.forget),
                "--retain",
                path_str(&s.retain),
                "--steps",
                "1",
                "--steering-coef",
                "3",
                "--skip-first",
                k,
            ],
        );
        let loss = v["report"]["curve"][0]["forget_loss"].as_f64().unwrap();
        (last_step(&out)["params"]["skip_first"].clone(), loss)
    };
    let (k0, l0) = skip("rmu-skip0", "0");
    let (k1, l1) = skip("rmu-skip1", "1");
    assert_eq!((k0, k1), (json!(0), json!(1)));
    assert!(
        l0 > 0.0 && l1 > 0.0 && (l0 - l1).abs() > 1e-6 * l0,
        "{l0} vs {l1}"
    );
}

fn fails(s: &Setup, tag: &str, args: &[&str], needles: &[&str]) {
    let out = s.root.join(tag);
    let mut a = args.to_vec();
    a.extend_from_slice(&["-o", path_str(&out)]);
    let r = intervene(&a);
    assert_eq!(r.code, 2, "{r}");
    for n in needles {
        assert!(r.stderr.contains(n), "missing `{n}`: {r}");
    }
    assert!(!out.exists(), "{tag}: output written on failure");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let s = setup();
    let base = path_str(&s.base);
    let empty = s.root.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let blank = s.root.join("blank.txt");
    std::fs::write(&blank, "  \n").unwrap();
    let (f, r) = (path_str(&s.forget), path_str(&s.retain));
    fails(
        &s,
        "e1",
        &["ga", base, "--forget", path_str(&empty)],
        &["empty.jsonl"],
    );
    fails(
        &s,
        "e2",
        &["ga", base, "--forget", path_str(&blank)],
        &["blank.txt"],
    );
    fails(&s, "e3", &["gd", base, "--forget", f], &["--retain"]);
    fails(&s, "e4", &["rmu", base, "--forget", f], &["--retain"]);
    fails(
        &s,
        "e5",
        &["rmu", base, "--forget", f, "--retain", r, "--layer", "2"],
        &["--layer", "out of range"],
    );
    fails(
        &s,
        "e6",
        &[
            "rmu",
            base,
            "--forget",
            f,
            "--retain",
            r,
            "--layer",
            "0",
            "--update-layers",
            "0..2",
        ],
        &["--update-layers"],
    );
    fails(
        &s,
        "e7",
        &["gd", base, "--forget", f, "--retain", r, "--layers", "0..5"],
        &["--layers"],
    );
    fails(
        &s,
        "e8",
        &["ga", base, "--forget", f, "--retain", r],
        &["--retain"],
    );
    fails(
        &s,
        "e9",
        &[
            "rmu",
            base,
            "--forget",
            f,
            "--retain",
            r,
            "--steering-coef",
            "1,2,3",
        ],
        &["--steering-coef"],
    );
    fails(
        &s,
        "e10",
        &[
            "rmu", base, "--forget", f, "--retain", r, "--module", "nope",
        ],
        &["--module"],
    );
    fails(
        &s,
        "e10b",
        &["ga", base, "--forget", f, "--skip-first", "1"],
        &["--skip-first"],
    );
    fails(
        &s,
        "e10c",
        &[
            "rmu",
            base,
            "--forget",
            f,
            "--retain",
            r,
            "--skip-first",
            "100000",
        ],
        &["--skip-first", "nothing is left"],
    );
    fails(
        &s,
        "e11",
        &["ga", base, "--forget", f, "--steps", "0"],
        &["--steps"],
    );
    fails(
        &s,
        "e12",
        &[
            "ga",
            base,
            "--forget",
            path_str(&s.root.join("missing.jsonl")),
        ],
        &["missing.jsonl"],
    );
    fails(
        &s,
        "e13",
        &[
            "ga",
            base,
            "--forget",
            f,
            "--lr",
            "1e30",
            "--steps",
            "4",
            "--batch-size",
            "4",
        ],
        &[],
    );
    let nonjson = s.root.join("bad.jsonl");
    std::fs::write(&nonjson, "{\"text\": \"ok\"}\n{\"title\": 3}\n").unwrap();
    fails(
        &s,
        "e14",
        &["gd", base, "--forget", path_str(&nonjson), "--retain", r],
        &["bad.jsonl", "line 2"],
    );
}
