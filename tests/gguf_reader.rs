//! The GGUF reader and dequantisation against gguf-py: the committed fixtures made by
//! `fixtures/gen_gguf_fixtures.py` (every value type, every supported ggml type), and, when it is
//! present, the SmolLM2-135M Q4_1 model under `models/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use intervene::checkpoint::gguf::{dequant, GgmlType, GgufFile, GgufValue};
use intervene::Error;

const REGEN: &str = "regenerate with `/opt/pyref/bin/python fixtures/gen_gguf_fixtures.py`";
/// Keep in sync with GOLDEN_MAGIC / GOLDEN_VERSION in the generator.
const GOLDEN_MAGIC: &[u8; 4] = b"IVGG";
const GOLDEN_VERSION: u32 = 1;

/// Quantised values may differ from gguf-py only by the rounding of one multiply(-add) per
/// element, e.g. where a C build fuses `q * d + m` into an FMA: at most an ulp or two of the
/// block's largest magnitude (~1.2e-7 relative). 1e-6 of the block's largest magnitude leaves
/// headroom for that and still catches any wrong bit in a code or scale, which moves a value by
/// at least one quantisation step (>= 1/127 of the block maximum for Q8_0, coarser elsewhere).
const QUANT_REL_TOL: f32 = 1e-6;
/// Whole-tensor sums: ours accumulates sequentially in f64, numpy pairwise in f64; over 28M
/// terms the two orders differ by far less than 1e-9 of the absolute sum.
const SUM_REL_TOL: f64 = 1e-9;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/gguf").join(name)
}

struct Golden {
    name: String,
    ggml_type: u32,
    dims: Vec<u64>,
    values: Vec<f32>,
}

/// Reads `golden.bin` (layout: `write_golden` in the generator).
fn read_golden(path: &Path) -> Vec<Golden> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}; {REGEN}", path.display()));
    let mut r = Reader(&bytes);
    assert_eq!(
        r.take(4),
        GOLDEN_MAGIC,
        "{}: bad magic; {REGEN}",
        path.display()
    );
    let version = r.u32();
    assert_eq!(version, GOLDEN_VERSION, "golden version {version}; {REGEN}");
    let count = r.u32();
    let mut out = Vec::new();
    for _ in 0..count {
        let name_len = r.u32() as usize;
        let name = String::from_utf8(r.take(name_len).to_vec()).unwrap();
        let ggml_type = r.u32();
        let n_dims = r.u32();
        let dims = (0..n_dims).map(|_| r.u64()).collect();
        let n = r.u64() as usize;
        let values = r
            .take(4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.push(Golden {
            name,
            ggml_type,
            dims,
            values,
        });
    }
    assert!(
        r.0.is_empty(),
        "trailing bytes in {}; {REGEN}",
        path.display()
    );
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(n <= self.0.len(), "golden file truncated; {REGEN}");
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
}

/// Bit-exact comparison (plain float types convert exactly).
fn assert_bit_exact(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let bad: Vec<usize> = (0..ours.len())
        .filter(|&i| ours[i].to_bits() != reference[i].to_bits())
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ; first at {}: {} vs {}",
        bad.len(),
        ours.len(),
        bad[0],
        ours[bad[0]],
        reference[bad[0]]
    );
}

/// Per-block comparison: |ours - ref| <= QUANT_REL_TOL * max |ref| over the block. Reports the
/// count, the worst error and its index, and the mean error on failure.
fn assert_close_per_block(what: &str, ours: &[f32], reference: &[f32], block: usize) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let (mut n_bad, mut worst, mut worst_at, mut total) = (0usize, 0f32, 0usize, 0f64);
    for (b, (o, r)) in ours.chunks(block).zip(reference.chunks(block)).enumerate() {
        let scale = r.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (j, (x, y)) in o.iter().zip(r).enumerate() {
            let err = (x - y).abs();
            total += f64::from(err);
            // A NaN error (NaN on one side only) counts as a failure.
            if err.is_nan() || err > QUANT_REL_TOL * scale {
                n_bad += 1;
            }
            if err.is_nan() || err > worst {
                (worst, worst_at) = (err, b * block + j);
            }
        }
    }
    assert!(
        n_bad == 0,
        "{what}: {n_bad} of {} values exceed the per-block tolerance; max abs error {worst} at \
         {worst_at} ({} vs {}); mean abs error {}",
        ours.len(),
        ours[worst_at],
        reference[worst_at],
        total / ours.len() as f64
    );
}

fn types_gguf() -> GgufFile {
    let path = fixture("types.gguf");
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{e:#}; {REGEN}"))
}

#[test]
fn fixture_metadata_of_every_value_type() {
    let f = types_gguf();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64, "general.alignment set by the generator");
    assert_eq!(f.data_start() % 64, 0);
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("missing key {k}"));
    assert_eq!(get("general.architecture").as_str(), Some("llama"));
    assert_eq!(get("general.alignment"), &GgufValue::U32(64));
    assert_eq!(get("test.u8"), &GgufValue::U8(200));
    assert_eq!(get("test.i8"), &GgufValue::I8(-100));
    assert_eq!(get("test.u16"), &GgufValue::U16(60000));
    assert_eq!(get("test.i16"), &GgufValue::I16(-30000));
    assert_eq!(get("test.u32"), &GgufValue::U32(4_000_000_000));
    assert_eq!(get("test.i32"), &GgufValue::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), &GgufValue::F32(0.15625));
    assert_eq!(get("test.bool"), &GgufValue::Bool(true));
    assert_eq!(get("test.string").as_str(), Some("h\u{e9}llo \u{2713}"));
    assert_eq!(get("test.u64"), &GgufValue::U64((1 << 40) + 7));
    assert_eq!(get("test.i64"), &GgufValue::I64(-(1 << 40)));
    assert_eq!(get("test.f64"), &GgufValue::F64(0.1));
    let ints = |v: &[i32]| GgufValue::Array(v.iter().map(|&i| GgufValue::I32(i)).collect());
    assert_eq!(get("test.array.i32"), &ints(&[1, -2, 3]));
    let strs: Vec<_> = get("test.array.string")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["a", "bc", ""]);
    assert_eq!(
        get("test.array.nested"),
        &GgufValue::Array(vec![ints(&[1, 2]), ints(&[3])])
    );
    // File order is kept.
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &keys[..3],
        ["general.architecture", "general.alignment", "test.u8"]
    );
    assert_eq!(keys.len(), 17);
}

#[test]
fn fixture_tensors_match_gguf_py() {
    let f = types_gguf();
    let golden = read_golden(&fixture("golden.bin"));
    // Every dequantisable tensor in the file has a golden entry, so none is silently skipped.
    let supported: Vec<&str> = f
        .tensors()
        .iter()
        .filter(|t| t.ggml_type.can_dequantize())
        .map(|t| t.name.as_str())
        .collect();
    let golden_names: Vec<&str> = golden.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(supported, golden_names);
    for g in &golden {
        let info = f.tensor(&g.name).unwrap();
        assert_eq!(info.ggml_type.id(), g.ggml_type, "{}", g.name);
        assert_eq!(info.dims, g.dims, "{}", g.name);
        assert_eq!(info.offset % 64, 0, "{} is aligned", g.name);
        let hf: Vec<usize> = g.dims.iter().rev().map(|&d| d as usize).collect();
        assert_eq!(info.hf_shape(), hf);
        let ours = f.dequantize(info).unwrap();
        let n = info.numel() as usize;
        let seq = dequant::dequantize_sequential(info.ggml_type, f.tensor_bytes(info), n).unwrap();
        assert_bit_exact(&format!("{} parallel vs sequential", g.name), &ours, &seq);
        match info.ggml_type {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                assert_bit_exact(&g.name, &ours, &g.values)
            }
            ty => assert_close_per_block(&g.name, &ours, &g.values, ty.block_size()),
        }
    }
    let types: Vec<GgmlType> = f.tensors().iter().map(|t| t.ggml_type).collect();
    for ty in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        assert!(types.contains(&ty), "fixture lacks {ty}");
    }
}

#[test]
fn fixture_unsupported_type_opens_but_does_not_dequantise() {
    let f = types_gguf();
    let info = f.tensor("iq4_nl.unsupported").unwrap();
    assert_eq!(info.ggml_type, GgmlType::IQ4_NL);
    assert_eq!(f.tensor_bytes(info).len(), 18);
    match f.dequantize(info) {
        Err(e @ Error::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("iq4_nl.unsupported") && msg.contains("IQ4_NL"),
                "{msg}"
            );
        }
        other => panic!(
            "expected Error::Unsupported, got {:?}",
            other.map(|v| v.len())
        ),
    }
}

#[test]
fn fixture_version_2() {
    let f = GgufFile::open(&fixture("types_v2.gguf")).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.get("test.u32").and_then(GgufValue::as_u64), Some(7));
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["f32", "q8_0"]);
    let t = f.tensor("f32").unwrap();
    assert_eq!((t.hf_shape(), t.ggml_type), (vec![3, 32], GgmlType::F32));
    let q = f.tensor("q8_0").unwrap();
    assert_eq!((q.dims.clone(), q.n_bytes), (vec![64, 1], 68));
    let values = f.dequantize(q).unwrap();
    assert!(values.len() == 64 && values.iter().all(|v| v.is_finite() && v.abs() < 10.0));
}

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn smollm2_q4_1_model() {
    let path = root().join(MODEL);
    if !path.exists() {
        println!(
            "skipped: {} is absent (copy or link the model there to run this)",
            MODEL
        );
        return;
    }
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(
        f.get("llama.block_count").and_then(GgufValue::as_u64),
        Some(30)
    );
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.dims, vec![576, 49152]);
    assert_eq!(embd.hf_shape(), vec![49152, 576]);
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ggml_type, GgmlType::Q4_1);

    let golden_path = fixture("smollm2_q4_1_golden.json");
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&golden_path)
            .unwrap_or_else(|e| panic!("{}: {e}; {REGEN}", golden_path.display())),
    )
    .unwrap();
    for info in [q, embd] {
        let start = Instant::now();
        let values = f.dequantize(info).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "dequantised {} ({}, {} values) in {:.3} s: {:.1} M values/s",
            info.name,
            info.ggml_type,
            values.len(),
            secs,
            values.len() as f64 / secs / 1e6
        );
        check_against_json(&info.name, &values, &golden["tensors"][&info.name]);
    }
}

fn check_against_json(name: &str, values: &[f32], g: &serde_json::Value) {
    assert!(g.is_object(), "golden JSON lacks {name}; {REGEN}");
    let block = g["block_size"].as_u64().unwrap() as usize;
    for slice in g["slices"].as_array().unwrap() {
        let start = slice["start"].as_u64().unwrap() as usize;
        let reference: Vec<f32> = slice["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let ours = &values[start..start + reference.len()];
        assert_close_per_block(&format!("{name}[{start}..]"), ours, &reference, block);
    }
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    let abs_sum: f64 = values.iter().map(|&v| f64::from(v).abs()).sum();
    let (ref_sum, ref_abs) = (g["sum"].as_f64().unwrap(), g["abs_sum"].as_f64().unwrap());
    assert!(
        (abs_sum - ref_abs).abs() <= SUM_REL_TOL * ref_abs,
        "{name}: abs-sum {abs_sum} vs gguf-py {ref_abs}"
    );
    assert!(
        (sum - ref_sum).abs() <= SUM_REL_TOL * ref_abs,
        "{name}: sum {sum} vs gguf-py {ref_sum}"
    );
}
