//! Import, inspect and verify through the real binary on the tiny fixtures: determinism,
//! round trips, and every malformed input the foundation issue lists (exit 2, a message naming
//! the file and field, nothing written).

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

fn tiny_hf() -> std::path::PathBuf {
    fixture("tiny/hf")
}

/// Imports SRC into DIR/out and returns the run.
fn import(src: &Path, out: &Path) -> Run {
    intervene(&["import", path_str(src), "-o", path_str(out), "--quiet"])
}

/// The failure contract: exit 2, the message names `needle` and the file, OUT not created,
/// and no staging directory left beside it.
fn assert_refused(run: &Run, out: &Path, file_hint: &str, needle: &str) {
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains(needle),
        "expected `{needle}` in stderr:\n{run}"
    );
    assert!(
        run.stderr.contains(file_hint),
        "expected the file `{file_hint}` named:\n{run}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "one clear message:\n{run}");
    assert!(!out.exists(), "output must not be created");
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "staging directory left behind");
}

#[test]
fn import_is_deterministic_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ra = import(&tiny_hf(), &a);
    assert_eq!(ra.code, 0, "{ra}");
    let rb = import(&tiny_hf(), &b);
    assert_eq!(rb.code, 0, "{rb}");
    assert!(ra.stdout.trim().starts_with("blake3:"), "{ra}");
    assert_eq!(ra.stdout, rb.stdout, "same input, same id");
    let bytes_a = std::fs::read(a.join("model.safetensors")).unwrap();
    let bytes_b = std::fs::read(b.join("model.safetensors")).unwrap();
    assert_eq!(bytes_a, bytes_b, "same bytes");
    let v = intervene(&["verify", path_str(&a)]);
    assert_eq!(v.code, 0, "{v}");
    assert!(v.stdout.contains(ra.stdout.trim()), "{v}");
    for f in ["config.json", "provenance.json", "model.safetensors"] {
        assert!(a.join(f).exists(), "{f}");
    }
}

#[test]
fn reimporting_our_own_output_keeps_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let ra = import(&tiny_hf(), &a);
    assert_eq!(ra.code, 0, "{ra}");
    let rb = import(&a, &b);
    assert_eq!(rb.code, 0, "{rb}");
    assert_eq!(ra.stdout, rb.stdout);
}

#[test]
fn inspect_json_lists_config_tensors_and_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let ra = import(&tiny_hf(), &a);
    assert_eq!(ra.code, 0, "{ra}");
    let r = intervene(&["inspect", path_str(&a), "--json"]);
    assert_eq!(r.code, 0, "{r}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["id"].as_str().unwrap(), ra.stdout.trim());
    assert_eq!(v["chain"][0]["op"], "import");
    assert_eq!(v["chain"][0]["output"], v["id"]);
    assert!(v["chain"][0]["inputs"][0]["blake3"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"model.layers.1.mlp.down_proj.weight"));
    let human = intervene(&["inspect", path_str(&a)]);
    assert_eq!(human.code, 0, "{human}");
    assert!(human.stdout.contains("chain"), "{human}");
}

#[test]
fn verify_reports_a_flipped_weight_byte_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    assert_eq!(import(&tiny_hf(), &a).code, 0);
    let st = a.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&st, bytes).unwrap();
    let r = intervene(&["verify", path_str(&a)]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("model.safetensors") || r.stderr.contains(path_str(&a)),
        "{r}"
    );
    assert!(r.stderr.contains("records id"), "{r}");
}

#[test]
fn existing_and_non_directory_outputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    assert_eq!(import(&tiny_hf(), &a).code, 0);
    let before = std::fs::read(a.join("model.safetensors")).unwrap();
    let r = import(&tiny_hf(), &a);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("already exists"), "{r}");
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        before,
        "existing output untouched"
    );
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let r = import(&tiny_hf(), &file);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("not a directory"), "{r}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    let forced = intervene(&[
        "import",
        path_str(&tiny_hf()),
        "-o",
        path_str(&a),
        "--force",
        "-q",
    ]);
    assert_eq!(forced.code, 0, "{forced}");
}

/// Copies the tiny HF fixture, rewrites its safetensors with `edit`, imports, and expects refusal.
fn refused_safetensors(
    edit: impl FnOnce(&mut Value, &mut Vec<u8>) -> Option<Vec<u8>>,
    needle: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_dir(&tiny_hf(), &src);
    let st = src.join("model.safetensors");
    let original = std::fs::read(&st).unwrap();
    let (mut header, mut data) = split_safetensors(&original);
    let bytes = edit(&mut header, &mut data).unwrap_or_else(|| join_safetensors(&header, &data));
    std::fs::write(&st, &bytes).unwrap();
    let out = tmp.path().join("out");
    let run = import(&src, &out);
    assert_refused(&run, &out, "model.safetensors", needle);
    assert_eq!(std::fs::read(&st).unwrap(), bytes, "input unchanged");
}

fn first_tensor(header: &Value) -> String {
    header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone()
}

#[test]
fn malformed_safetensors_are_refused_by_field() {
    refused_safetensors(|_, _| Some(vec![1, 2, 3]), "header length");
    refused_safetensors(
        |h, d| {
            let mut b = join_safetensors(h, d);
            let past_end = b.len() as u64 * 2;
            b[..8].copy_from_slice(&past_end.to_le_bytes());
            Some(b)
        },
        "runs past the end",
    );
    refused_safetensors(
        |h, d| {
            let b = join_safetensors(h, d);
            Some(b[..b.len() - 7].to_vec())
        },
        "data_offsets",
    );
    refused_safetensors(
        |h, _| {
            let name = first_tensor(h);
            h[&name]["dtype"] = json!("Q3");
            None
        },
        "unknown dtype `Q3`",
    );
    refused_safetensors(
        |h, _| {
            let name = first_tensor(h);
            let shape = h[&name]["shape"].as_array().unwrap().clone();
            let mut s: Vec<u64> = shape.iter().map(|x| x.as_u64().unwrap()).collect();
            s[0] += 1;
            h[&name]["shape"] = json!(s);
            None
        },
        "needs",
    );
    refused_safetensors(
        |h, _| {
            // Make the second tensor (by offset) start 4 bytes early: an overlap.
            let mut entries: Vec<(String, u64)> = h
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(k, v)| (k.clone(), v["data_offsets"][0].as_u64().unwrap()))
                .collect();
            entries.sort_by_key(|e| e.1);
            let (name, begin) = entries[1].clone();
            let end = h[&name]["data_offsets"][1].as_u64().unwrap();
            h[&name]["data_offsets"] = json!([begin - 4, end - 4]);
            None
        },
        "overlaps",
    );
    refused_safetensors(
        |h, _| {
            h.as_object_mut()
                .unwrap()
                .remove("model.layers.1.mlp.up_proj.weight")
                .unwrap();
            None
        },
        "",
    );
}

#[test]
fn a_missing_tensor_and_a_disagreeing_config_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_dir(&tiny_hf(), &src);
    let cfg_path = src.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["intermediate_size"] = json!(cfg["intermediate_size"].as_u64().unwrap() + 1);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let run = import(&src, &out);
    assert_refused(&run, &out, "config.json", "disagrees with config.json");

    copy_dir(&tiny_hf(), &src);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let mut cfg2 = cfg.clone();
    cfg2["num_hidden_layers"] = json!(cfg["num_hidden_layers"].as_u64().unwrap() + 1);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg2).unwrap()).unwrap();
    let run = import(&src, &out);
    assert_refused(&run, &out, "config.json", "missing");
}

#[test]
fn malformed_gguf_files_are_refused_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good = std::fs::read(fixture("tiny/tiny.gguf")).unwrap();
    let truncated = write("trunc.gguf", &good[..good.len() / 2]);
    assert_refused(&import(&truncated, &out), &out, "trunc.gguf", "");
    let header_only = write("hdr.gguf", &good[..20]);
    assert_refused(&import(&header_only, &out), &out, "hdr.gguf", "");
    let unknown_type = gguf_bytes(
        &[("general.architecture", GgufMeta::Str("llama"))],
        &[("token_embd.weight", vec![32, 2], 99, vec![0u8; 256])],
    );
    let p = write("type99.gguf", &unknown_type);
    assert_refused(&import(&p, &out), &out, "type99.gguf", "99");
    let bad_magic = write("magic.gguf", b"GGUX0000000000000000000000000");
    assert_refused(&import(&bad_magic, &out), &out, "magic.gguf", "magic");
}

#[test]
fn the_tiny_gguf_imports_to_the_same_weights_as_the_hf_fixture() {
    // tiny.gguf holds the tiny HF model's weights as F32 with llama.cpp's Q/K permutation, so
    // an import that maps names and un-permutes correctly reproduces them bit for bit.
    let tmp = tempfile::tempdir().unwrap();
    let (g, h) = (tmp.path().join("g"), tmp.path().join("h"));
    let rg = import(&fixture("tiny/tiny.gguf"), &g);
    assert_eq!(rg.code, 0, "{rg}");
    let rh = import(&tiny_hf(), &h);
    assert_eq!(rh.code, 0, "{rh}");
    assert_eq!(rg.stdout, rh.stdout, "same tensors, same id");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(g.join(f).exists(), "{f}");
    }
}

#[test]
fn sharded_checkpoints_import_to_the_same_id_and_bad_indexes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("sharded");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(tiny_hf().join("config.json"), src.join("config.json")).unwrap();
    let (header, data) =
        split_safetensors(&std::fs::read(tiny_hf().join("model.safetensors")).unwrap());
    // Deal the tensors alternately into two shards, re-laying each shard's data contiguously.
    let mut shards = [
        (serde_json::Map::new(), Vec::new()),
        (serde_json::Map::new(), Vec::new()),
    ];
    let mut weight_map = serde_json::Map::new();
    let mut names: Vec<&String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let e = &header[name.as_str()];
        let (b, en) = (
            e["data_offsets"][0].as_u64().unwrap() as usize,
            e["data_offsets"][1].as_u64().unwrap() as usize,
        );
        let (h, d) = &mut shards[i % 2];
        let start = d.len();
        d.extend_from_slice(&data[b..en]);
        h.insert(
            (*name).clone(),
            json!({"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [start, d.len()]}),
        );
        weight_map.insert(
            (*name).clone(),
            json!(format!("model-0000{}-of-00002.safetensors", i % 2 + 1)),
        );
    }
    for (i, (h, d)) in shards.iter().enumerate() {
        let bytes = join_safetensors(&Value::Object(h.clone()), d);
        std::fs::write(
            src.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            bytes,
        )
        .unwrap();
    }
    let index = json!({"metadata": {"total_size": data.len()}, "weight_map": weight_map});
    std::fs::write(
        src.join("model.safetensors.index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ra = import(&src, &a);
    assert_eq!(ra.code, 0, "{ra}");
    let rb = import(&tiny_hf(), &b);
    assert_eq!(ra.stdout, rb.stdout, "sharding does not change the id");

    // An index that points a tensor at the wrong shard, or outside the directory.
    let name = names[0].clone();
    let mut bad = index.clone();
    bad["weight_map"][&name] = json!("model-00002-of-00002.safetensors");
    std::fs::write(
        src.join("model.safetensors.index.json"),
        serde_json::to_vec(&bad).unwrap(),
    )
    .unwrap();
    let out = tmp.path().join("out");
    assert_refused(
        &import(&src, &out),
        &out,
        "model.safetensors.index.json",
        &format!("weight_map.{name}"),
    );
    bad["weight_map"][&name] = json!("../escape.safetensors");
    std::fs::write(
        src.join("model.safetensors.index.json"),
        serde_json::to_vec(&bad).unwrap(),
    )
    .unwrap();
    assert_refused(
        &import(&src, &out),
        &out,
        "model.safetensors.index.json",
        "not a plain file name",
    );
}

#[test]
fn dtype_conversion_is_recorded_and_kept_on_reimport() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let r = intervene(&[
        "import",
        path_str(&tiny_hf()),
        "-o",
        path_str(&a),
        "--dtype",
        "bf16",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(import(&a, &b).code, 0);
    let v: Value =
        serde_json::from_str(&intervene(&["inspect", path_str(&b), "--json"]).stdout).unwrap();
    assert!(v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["dtype"] == "BF16"));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
    let bad = intervene(&[
        "import",
        path_str(&tiny_hf()),
        "-o",
        path_str(&tmp.path().join("c")),
        "--dtype",
        "f8",
    ]);
    assert_eq!(bad.code, 2, "{bad}");
    assert!(bad.stderr.contains("--dtype"), "{bad}");
}
