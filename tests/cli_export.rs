//! `intervene export gguf`: the import round trip (f32 exports re-import to the same id, and
//! carry the same tensor bytes as gguf-py's converter wrote into fixtures/tiny/tiny.gguf),
//! f16/q8_0/q4_0 within named tolerances, the metadata keys, the Q4_0 grid property for
//! `rtn`/`gptq --bits 4 --group-size 32 --sym`, and bad input.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{fixture, intervene, join_safetensors, path_str, split_safetensors};
use intervene::checkpoint::gguf::{GgufFile, GgufValue};
use serde_json::{json, Value};

/// fp16 has 11 significant bits: rounding moves a normal value by at most 2^-11 of it...
const F16_REL: f32 = 1.0 / 2048.0;
/// ...and a value in fp16's subnormal range (below 2^-14) by at most half its spacing 2^-24.
const F16_ABS_FLOOR: f32 = 1.0 / (1u32 << 25) as f32;
/// Q8_0 (ggml rule): half a step of max|x|/127, plus |q| <= 127 times the fp16 rounding of d.
const Q8_0_REL_OF_MAX: f32 = 0.5 / 127.0 + F16_REL;
/// Q4_0 (ggml rule): a full step max|x|/8 (the clamp at index 15 moves +max|x| to 7/8 of it),
/// plus |q - 8| <= 8 times the fp16 rounding of d.
const Q4_0_REL_OF_MAX: f32 = 1.0 / 8.0 + F16_REL;
/// A value already on a 4-bit grid `s * k` moves only by the fp16 rounding of `s`, i.e. by at
/// most 2^-11 of itself.
const Q4_0_GRID_REL: f32 = F16_REL;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn ok(args: &[&str]) -> String {
    let r = intervene(args);
    assert_eq!(r.code, 0, "{args:?}\n{r}");
    r.stdout
}

fn import(src: &Path, out: &Path) -> String {
    ok(&["import", path_str(src), "-o", path_str(out)])
        .trim()
        .to_string()
}

fn export(dir: &Path, out: &Path, ty: &str) -> Value {
    let s = ok(&[
        "export",
        "gguf",
        path_str(dir),
        "-o",
        path_str(out),
        "--type",
        ty,
        "--json",
    ]);
    serde_json::from_str(&s).unwrap()
}

/// name -> values of a checkpoint's F32 safetensors.
fn tensors(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (header, data) = split_safetensors(&bytes);
    let mut out = BTreeMap::new();
    for (name, v) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(v["dtype"], "F32", "{name}");
        let off: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
        let vals = data[off[0]..off[1]]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.insert(name.clone(), vals);
    }
    out
}

fn meta_strs(g: &GgufFile, key: &str) -> Vec<String> {
    g.get(key)
        .unwrap_or_else(|| panic!("{key} missing"))
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn report<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

#[test]
fn f32_export_reimports_to_the_same_id_with_converter_bytes_and_metadata() {
    let t = tmp();
    let a = t.path().join("a");
    let id = import(&fixture("tiny/tiny.gguf"), &a);
    let file = t.path().join("a.gguf");
    let r = export(&a, &file, "f32");
    assert_eq!(r["id"], id.as_str());

    // The import round trip: same weights, same id.
    let b = t.path().join("b");
    assert_eq!(import(&file, &b), id);

    // Tensor bytes equal gguf-py's converter output (names, dims, Q/K permutation).
    let ours = GgufFile::open(&file).unwrap();
    let theirs = GgufFile::open(&fixture("tiny/tiny.gguf")).unwrap();
    assert_eq!(ours.tensors().len(), theirs.tensors().len());
    for t in theirs.tensors() {
        let o = ours
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((&o.dims, o.ggml_type), (&t.dims, t.ggml_type), "{}", t.name);
        assert_eq!(ours.tensor_bytes(o), theirs.tensor_bytes(t), "{}", t.name);
    }
    // Every llama.* key the converter wrote, with the same value; the tokenizer too.
    for (k, v) in theirs.metadata() {
        if k.starts_with("llama.") || k.starts_with("tokenizer.") || k == "general.architecture" {
            assert_eq!(ours.get(k), Some(v), "{k}");
        }
    }
    for k in [
        "general.name",
        "general.file_type",
        "general.quantization_version",
    ] {
        assert!(ours.get(k).is_some(), "{k}");
    }
    assert_eq!(ours.get("general.file_type"), Some(&GgufValue::U32(0)));
    assert_eq!(
        ours.get("intervene.id").unwrap().as_str(),
        Some(id.as_str())
    );
    assert_eq!(meta_strs(&ours, "intervene.chain.ops"), ["import"]);
    assert_eq!(
        meta_strs(&ours, "intervene.chain.outputs"),
        std::slice::from_ref(&id)
    );
    let prov: Value =
        serde_json::from_str(ours.get("intervene.provenance").unwrap().as_str().unwrap()).unwrap();
    assert_eq!(prov["id"], id.as_str());
    assert!(ours.get("intervene.export.fallbacks").is_none());

    // Same input, same bytes; the input directory is untouched.
    let again = t.path().join("again.gguf");
    export(&a, &again, "f32");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let v = intervene(&["verify", path_str(&a)]);
    assert_eq!(v.code, 0, "{v}");
}

#[test]
fn tiny_fixture_q8_0_and_q4_0_fall_back_to_f16_and_say_so() {
    // The tiny model's rows are 48 and 77 long: no Q8_0/Q4_0 block fits, every matrix is F16.
    let t = tmp();
    let a = t.path().join("a");
    import(&fixture("tiny/tiny.gguf"), &a);
    let src = tensors(&a);
    for ty in ["f16", "q8_0", "q4_0"] {
        let file = t.path().join(format!("{ty}.gguf"));
        let r = export(&a, &file, ty);
        let g = GgufFile::open(&file).unwrap();
        for info in g.tensors() {
            let want = if info.dims.len() == 1 { "F32" } else { "F16" };
            assert_eq!(info.ggml_type.name(), want, "{ty} {}", info.name);
        }
        let fallbacks = g
            .get("intervene.export.fallbacks")
            .map(|_| meta_strs(&g, "intervene.export.fallbacks"));
        if ty == "f16" {
            assert!(fallbacks.is_none());
        } else {
            let f = fallbacks.unwrap();
            assert_eq!(f.len(), 2 + 2 * 7, "{f:?}");
            assert!(f
                .iter()
                .any(|x| x.contains("blk.0.ffn_down.weight") && x.contains("77")));
            assert!(report(&r, "output.weight")["fallback"].is_string());
        }
        let b = t.path().join(format!("re-{ty}"));
        // An all-F16 GGUF imports as F16 by default; ask for F32 (exact from F16).
        ok(&[
            "import",
            path_str(&file),
            "-o",
            path_str(&b),
            "--dtype",
            "f32",
        ]);
        for (name, x) in tensors(&b) {
            let s = &src[&name];
            for (i, (a, b)) in s.iter().zip(&x).enumerate() {
                let tol = a.abs() * F16_REL + F16_ABS_FLOOR;
                assert!((a - b).abs() <= tol, "{ty} {name}[{i}]: {a} vs {b}");
            }
        }
    }
}

/// A 2-layer model whose rows are multiples of 32 (hidden 64, ffn 96, head_dim 16), with the
/// tiny fixture's tokenizer. With `fp16_scales`, each 32-group of the linear layers has its
/// largest magnitude at -7.5 s for an fp16 number s, so the GPTQ sym grid's scale is s.
fn wide_model(root: &Path, fp16_scales: bool) -> PathBuf {
    let tiny = root.join("tiny");
    if !tiny.exists() {
        import(&fixture("tiny/tiny.gguf"), &tiny);
    }
    let hf = root.join(format!("wide-hf-{fp16_scales}"));
    std::fs::create_dir_all(&hf).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(tiny.join(f), hf.join(f)).unwrap();
    }
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(tiny.join("config.json")).unwrap()).unwrap();
    for (k, v) in [
        ("hidden_size", 64),
        ("intermediate_size", 96),
        ("num_attention_heads", 4),
        ("num_key_value_heads", 2),
        ("head_dim", 16),
    ] {
        cfg[k] = json!(v);
    }
    std::fs::write(hf.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();

    let (h, i, v) = (64usize, 96usize, 211usize);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h]),
        ("lm_head.weight".into(), vec![v, h]),
        ("model.norm.weight".into(), vec![h]),
    ];
    for l in 0..2 {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        shapes.extend([
            (p("input_layernorm.weight"), vec![h]),
            (p("post_attention_layernorm.weight"), vec![h]),
            (p("self_attn.q_proj.weight"), vec![64, h]),
            (p("self_attn.k_proj.weight"), vec![32, h]),
            (p("self_attn.v_proj.weight"), vec![32, h]),
            (p("self_attn.o_proj.weight"), vec![h, 64]),
            (p("mlp.gate_proj.weight"), vec![i, h]),
            (p("mlp.up_proj.weight"), vec![i, h]),
            (p("mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    shapes.sort();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(fp16_scales);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        let mut vals: Vec<f32> = if shape.len() == 1 {
            (0..n).map(|_| 1.0 + 0.1 * uniform()).collect()
        } else {
            (0..n).map(|_| 0.08 * uniform()).collect()
        };
        if fp16_scales && name.contains("_proj.weight") {
            let cols = shape[1];
            for g in vals.chunks_mut(32) {
                // s = m * 2^-12 with m < 2^11: an fp16 number; 15 s and 7.5 s are exact in f32.
                let m = 200.0 + (uniform().abs() * 1000.0).floor();
                let s = m / 4096.0;
                for x in g.iter_mut() {
                    *x = uniform() * 7.4 * s;
                }
                let at = ((uniform().abs() * 31.0) as usize).min(31);
                g[at] = -7.5 * s;
            }
            assert_eq!(cols % 32, 0);
        }
        let start = data.len();
        data.extend(vals.iter().flat_map(|x| x.to_le_bytes()));
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    std::fs::write(
        hf.join("model.safetensors"),
        join_safetensors(&Value::Object(header), &data),
    )
    .unwrap();
    let out = root.join(format!("wide-{fp16_scales}"));
    import(&hf, &out);
    out
}

/// Max |a - b| relative to max |a| over a tensor.
fn rel_err_of_max(a: &[f32], b: &[f32]) -> (f32, f32) {
    let amax = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    (err, amax)
}

#[test]
fn q8_0_and_q4_0_exports_reimport_within_their_tolerances() {
    let t = tmp();
    let w = wide_model(t.path(), false);
    let src = tensors(&w);
    for (ty, tol) in [("q8_0", Q8_0_REL_OF_MAX), ("q4_0", Q4_0_REL_OF_MAX)] {
        let file = t.path().join(format!("{ty}.gguf"));
        let r = export(&w, &file, ty);
        let g = GgufFile::open(&file).unwrap();
        assert!(g.get("intervene.export.fallbacks").is_none(), "{ty}");
        assert_eq!(
            g.tensor("blk.1.ffn_down.weight").unwrap().ggml_type.name(),
            ty.to_uppercase()
        );
        let back = t.path().join(format!("re-{ty}"));
        import(&file, &back);
        for (name, x) in tensors(&back) {
            let s = &src[&name];
            let (err, amax) = rel_err_of_max(s, &x);
            if name.ends_with("norm.weight") {
                assert_eq!(err, 0.0, "{ty} {name}: 1-D tensors stay F32");
            } else {
                // Per block the bound scales with the block's max; the tensor's max bounds it.
                assert!(err <= amax * tol, "{ty} {name}: {err} > {amax} * {tol}");
                assert!(err > 0.0, "{ty} {name}: random weights cannot be exact");
            }
        }
        assert_eq!(report(&r, "blk.0.attn_q.weight")["grid_blocks"], 0);
    }
}

fn quantise(method: &str, src: &Path, out: &Path, calib: Option<&Path>, extra: &[&str]) {
    let mut args = vec![
        method,
        path_str(src),
        "-o",
        path_str(out),
        "--bits",
        "4",
        "--group-size",
        "32",
        "--sym",
    ];
    if let Some(c) = calib {
        args.extend([
            "--calib",
            path_str(c),
            "--calib-samples",
            "4",
            "--seqlen",
            "16",
        ]);
    }
    args.extend_from_slice(extra);
    ok(&args);
}

/// The Q4_0 property on the linear layers of a 4-bit sym group-32 checkpoint: every block is
/// found on the checkpoint's grid, and the re-imported values differ from the stored ones only
/// by the fp16 rounding of each group's scale (zero when the scales are fp16 numbers).
fn check_grid_export(dir: &Path, root: &Path, tag: &str, expect_exact: bool) -> Value {
    let file = root.join(format!("{tag}.gguf"));
    let r = export(dir, &file, "q4_0");
    let back = root.join(format!("re-{tag}"));
    import(&file, &back);
    let stored = tensors(dir);
    let mut exact = 0;
    for (name, x) in tensors(&back) {
        if !name.contains("_proj.weight") {
            continue;
        }
        let s = &stored[&name];
        for (i, (a, b)) in s.iter().zip(&x).enumerate() {
            assert!(
                (a - b).abs() <= a.abs() * Q4_0_GRID_REL,
                "{tag} {name}[{i}]: {a} vs {b}"
            );
        }
        if expect_exact {
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(s), bits(&x), "{tag} {name}: not bit-exact");
        }
        let gguf = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["source"] == name.as_str())
            .unwrap();
        assert_eq!(gguf["grid_blocks"], gguf["blocks"], "{tag} {name}");
        exact += gguf["lossless_blocks"].as_u64().unwrap();
    }
    if expect_exact {
        assert!(exact > 0);
    }
    // The embeddings were not quantised by rtn/gptq: ggml's rule, lossy.
    let e = report(&r, "token_embd.weight");
    assert!(
        e["lossless_blocks"].as_u64() < e["blocks"].as_u64(),
        "{tag}"
    );
    r
}

#[test]
fn rtn_4bit_sym_g32_exports_to_q4_0_without_further_loss_when_scales_are_fp16() {
    let t = tmp();
    let w = wide_model(t.path(), true);
    let q = t.path().join("rtn");
    quantise("rtn", &w, &q, None, &[]);
    check_grid_export(&q, t.path(), "rtn-fp16", true);

    // Random weights: f32 scales, so blocks are on the grid but the scale rounds to fp16.
    let w = wide_model(t.path(), false);
    let q = t.path().join("rtn-rand");
    quantise("rtn", &w, &q, None, &[]);
    let r = check_grid_export(&q, t.path(), "rtn-f32", false);
    let t0 = report(&r, "blk.0.ffn_up.weight");
    assert!(t0["lossless_blocks"].as_u64() < t0["blocks"].as_u64());
}

#[test]
fn gptq_4bit_sym_g32_is_on_the_q4_0_grid_and_act_order_is_not() {
    let t = tmp();
    let w = wide_model(t.path(), false);
    let calib = t.path().join("calib.txt");
    let text = std::fs::read_to_string(fixture("data/wikitext2_test_raw_first200.txt")).unwrap();
    std::fs::write(&calib, text).unwrap();
    let q = t.path().join("gptq");
    quantise("gptq", &w, &q, Some(&calib), &[]);
    check_grid_export(&q, t.path(), "gptq", false);

    // With --act-order the groups follow the Hessian order, not the column order, so a Q4_0
    // block mixes groups: off the grid, re-fitted with ggml's rule, and reported as such.
    let qa = t.path().join("gptq-act");
    quantise("gptq", &w, &qa, Some(&calib), &["--act-order"]);
    let file = t.path().join("act.gguf");
    let r = export(&qa, &file, "q4_0");
    let t0 = report(&r, "blk.0.ffn_down.weight");
    assert!(t0["grid_blocks"].as_u64() < t0["blocks"].as_u64(), "{t0}");
}

#[test]
fn bad_input_exits_2_naming_the_fault_and_writes_nothing() {
    let t = tmp();
    let a = t.path().join("a");
    import(&fixture("tiny/tiny.gguf"), &a);
    let file = t.path().join("a.gguf");
    export(&a, &file, "f32");
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing(t.path());

    let run = |args: &[&str]| intervene(args);
    let exists = run(&["export", "gguf", path_str(&a), "-o", path_str(&file)]);
    assert_eq!(exists.code, 2, "{exists}");
    assert!(exists.stderr.contains("already exists") && exists.stderr.contains("--force"));
    let forced = run(&[
        "export",
        "gguf",
        path_str(&a),
        "-o",
        path_str(&file),
        "--force",
    ]);
    assert_eq!(forced.code, 0, "{forced}");

    let bad_type = run(&[
        "export",
        "gguf",
        path_str(&a),
        "-o",
        "x.gguf",
        "--type",
        "q4_k",
    ]);
    assert_eq!(bad_type.code, 2, "{bad_type}");
    assert!(bad_type.stderr.contains("q4_k") && bad_type.stderr.contains("q4_0"));

    let to_dir = run(&["export", "gguf", path_str(&a), "-o", path_str(t.path())]);
    assert_eq!(to_dir.code, 2, "{to_dir}");
    assert!(to_dir.stderr.contains("is a directory"), "{to_dir}");

    let missing = t.path().join("nope");
    let out = t.path().join("n.gguf");
    let r = run(&["export", "gguf", path_str(&missing), "-o", path_str(&out)]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("nope"), "{r}");

    // No tokenizer.json: refused by name, nothing written.
    let c = t.path().join("c");
    common::copy_dir(&a, &c);
    std::fs::remove_file(c.join("tokenizer.json")).unwrap();
    let r = run(&["export", "gguf", path_str(&c), "-o", path_str(&out)]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("tokenizer.json"), "{r}");

    // A non-finite weight: refused naming the tensor, nothing written.
    let d = t.path().join("d");
    common::copy_dir(&a, &d);
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let (header, mut data) = split_safetensors(&bytes);
    let off = header["model.layers.1.mlp.up_proj.weight"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    data[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(
        d.join("model.safetensors"),
        join_safetensors(&header, &data),
    )
    .unwrap();
    let r = run(&["export", "gguf", path_str(&d), "-o", path_str(&out)]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("model.layers.1.mlp.up_proj.weight"),
        "{r}"
    );

    let mut after = listing(t.path());
    after.retain(|n| n != "c" && n != "d");
    assert_eq!(after, before, "no output or temp file left behind");
}
