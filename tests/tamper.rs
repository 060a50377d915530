//! Tamper evidence through the real binary: `verify` recomputes the id and checks the chain's
//! links, digests and input hashes; a flipped tensor byte, an edited or relinked chain entry,
//! a swapped model.safetensors, an edited input file and a forged evaluation each exit 1 with
//! a message naming what differs, and an untouched checkpoint exits 0.

mod common;

use std::path::{Path, PathBuf};

use common::{copy_dir, fixture, intervene, path_str, split_safetensors, Run};
use serde_json::Value;

struct Lineage {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// A copy of the HF fixture (import's input files).
    src: PathBuf,
    /// import of `src`.
    base: PathBuf,
    /// rtn of `base`: a two-step chain.
    rtn: PathBuf,
    /// magnitude of `base`: a sibling.
    pruned: PathBuf,
}

fn lineage() -> Lineage {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let src = root.join("src");
    copy_dir(&fixture("tiny/hf"), &src);
    let base = root.join("base");
    let rtn = root.join("rtn");
    let pruned = root.join("pruned");
    for args in [
        vec!["import", path_str(&src), "-o", path_str(&base)],
        vec!["rtn", path_str(&base), "-o", path_str(&rtn)],
        vec!["magnitude", path_str(&base), "-o", path_str(&pruned)],
    ] {
        let r = intervene(&args);
        assert_eq!(r.code, 0, "{args:?}: {r}");
    }
    Lineage {
        _tmp: tmp,
        root,
        src,
        base,
        rtn,
        pruned,
    }
}

fn verify(dir: &Path) -> Run {
    intervene(&["verify", path_str(dir)])
}

fn read_prov(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap()
}

fn write_prov(dir: &Path, v: &Value) {
    std::fs::write(
        dir.join("provenance.json"),
        serde_json::to_vec_pretty(v).unwrap(),
    )
    .unwrap();
}

/// A copy of `dir` named `name` beside it.
fn copy(l: &Lineage, dir: &Path, name: &str) -> PathBuf {
    let d = l.root.join(name);
    copy_dir(dir, &d);
    d
}

fn assert_mismatch(r: &Run, wants: &[&str]) {
    assert_eq!(r.code, 1, "{r}");
    for w in wants {
        assert!(r.stderr.contains(w), "expected `{w}` in {r}");
    }
}

#[test]
fn untouched_checkpoints_verify() {
    let l = lineage();
    for d in [&l.base, &l.rtn, &l.pruned] {
        let r = verify(d);
        assert_eq!(r.code, 0, "{r}");
        assert!(r.stdout.starts_with("ok blake3:"), "{r}");
    }
    // The chain has one digest per entry, and the tensors are hashed one by one.
    let p = read_prov(&l.rtn);
    assert_eq!(p["chain_digests"].as_array().unwrap().len(), 2);
    assert_eq!(p["tensors"].as_object().unwrap().len(), 21);
    // Inputs present were re-hashed (weights + config of the import).
    let j = intervene(&["verify", "--json", path_str(&l.rtn)]);
    let v: Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["inputs_checked"], 2, "{j}");
    assert_eq!(v["ok"], true);
}

#[test]
fn a_flipped_byte_in_a_tensor_names_the_tensor() {
    let l = lineage();
    let d = copy(&l, &l.rtn, "flipped");
    let path = d.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let (header, _) = split_safetensors(&bytes);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let off = header["model.layers.1.mlp.up_proj.weight"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    bytes[8 + n + off + 5] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let r = verify(&d);
    assert_mismatch(
        &r,
        &[
            "weights hash to",
            "tensor `model.layers.1.mlp.up_proj.weight`: stored bytes hash to",
        ],
    );
    // Only that tensor is named.
    assert_eq!(r.stderr.matches("stored bytes hash to").count(), 1, "{r}");
}

#[test]
fn an_edited_chain_entry_is_reported_at_its_index() {
    let l = lineage();
    // Changed parameters: the links still hold, the digest does not.
    let d = copy(&l, &l.rtn, "params");
    let mut p = read_prov(&d);
    p["chain"][1]["params"]["quant"]["bits"] = Value::from(3);
    assert_ne!(read_prov(&d), p, "the edit must change something");
    write_prov(&d, &p);
    let r = verify(&d);
    assert_mismatch(&r, &["chain[1] (`rtn`): content differs"]);
    assert!(!r.stderr.contains("chain[0]"), "{r}");

    // A broken link: the parent no longer names the import's output.
    let d = copy(&l, &l.rtn, "link");
    let mut p = read_prov(&d);
    p["chain"][1]["parent"] = Value::from(format!("blake3:{}", "0".repeat(64)));
    write_prov(&d, &p);
    assert_mismatch(
        &verify(&d),
        &[
            "chain[1] (`rtn`): parent",
            "is not the previous step's output",
            "chain[1] (`rtn`): content differs",
        ],
    );

    // A removed entry (chain and digests both shortened consistently still breaks the links).
    let d = copy(&l, &l.rtn, "removed");
    let mut p = read_prov(&d);
    p["chain"].as_array_mut().unwrap().remove(0);
    p["chain_digests"].as_array_mut().unwrap().remove(0);
    write_prov(&d, &p);
    assert_mismatch(&verify(&d), &["chain[0] (`rtn`): parent"]);

    // An edited import step (its recorded source hash) is caught by its digest.
    let d = copy(&l, &l.rtn, "import-edit");
    let mut p = read_prov(&d);
    p["chain"][0]["inputs"][0]["blake3"] = Value::from(format!("blake3:{}", "1".repeat(64)));
    write_prov(&d, &p);
    assert_mismatch(&verify(&d), &["chain[0] (`import`): content differs"]);
}

#[test]
fn a_swapped_weights_file_is_reported() {
    let l = lineage();
    // The parent's weights under the child's provenance: recognised as chain[0]'s.
    let d = copy(&l, &l.rtn, "swap-parent");
    std::fs::copy(
        l.base.join("model.safetensors"),
        d.join("model.safetensors"),
    )
    .unwrap();
    let r = verify(&d);
    assert_mismatch(
        &r,
        &["they are the weights of chain[0] (`import`)", "tensor `"],
    );
    // A sibling's weights: every pruned tensor is named.
    let d = copy(&l, &l.rtn, "swap-sibling");
    std::fs::copy(
        l.pruned.join("model.safetensors"),
        d.join("model.safetensors"),
    )
    .unwrap();
    let r = verify(&d);
    assert_mismatch(
        &r,
        &[
            "weights hash to",
            "tensor `model.layers.0.mlp.down_proj.weight`",
        ],
    );
    assert!(!r.stderr.contains("earlier checkpoint"), "{r}");
}

#[test]
fn input_files_are_rehashed_where_present() {
    let l = lineage();
    let r = verify(&l.base);
    assert_eq!(r.code, 0, "{r}");
    // Edit the import's config.json after the fact.
    let cfg = l.src.join("config.json");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push('\n');
    std::fs::write(&cfg, text).unwrap();
    assert_mismatch(
        &verify(&l.base),
        &["chain[0] (`import`) input `config`", "now hashes to"],
    );
    // --no-inputs skips the check.
    let r = intervene(&["verify", "--no-inputs", path_str(&l.base)]);
    assert_eq!(r.code, 0, "{r}");
    // Absent inputs are a note, not a mismatch.
    std::fs::remove_dir_all(&l.src).unwrap();
    let r = verify(&l.base);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.contains("not present here"), "{r}");
}

#[test]
fn forged_or_edited_evaluations_are_reported() {
    let l = lineage();
    let id = read_prov(&l.rtn)["id"].as_str().unwrap().to_string();
    let data = l.root.join("data.txt");
    std::fs::write(&data, "some text").unwrap();
    let eval = intervene::checkpoint::Evaluation {
        checkpoint: id.clone(),
        task: "ppl".into(),
        data: intervene::eval::record::data_file("data", &data).unwrap(),
        settings: serde_json::json!({"seqlen": 16}),
        metrics: serde_json::json!({"ppl": 12.5}),
        seconds: 0.25,
        tool_version: "test".into(),
    };
    intervene::eval::record::append(&l.rtn, eval).unwrap();
    let r = verify(&l.rtn);
    assert_eq!(r.code, 0, "{r}");

    // Better metrics written by hand.
    let d = copy(&l, &l.rtn, "metrics");
    let mut p = read_prov(&d);
    p["evaluations"][0]["metrics"]["ppl"] = Value::from(3.5);
    write_prov(&d, &p);
    assert_mismatch(
        &verify(&d),
        &["evaluations[0] (`ppl` of", "content differs"],
    );

    // An evaluation added by hand, without a digest.
    let d = copy(&l, &l.rtn, "forged");
    let mut p = read_prov(&d);
    let extra = p["evaluations"][0].clone();
    p["evaluations"].as_array_mut().unwrap().push(extra);
    write_prov(&d, &p);
    assert_mismatch(&verify(&d), &["1 evaluations digests for 2 entries"]);

    // The evaluated data file changed since.
    std::fs::write(&data, "other text").unwrap();
    assert_mismatch(
        &verify(&l.rtn),
        &["evaluations[0] (`ppl`) input `data`", "now hashes to"],
    );
}
