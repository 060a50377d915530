//! The compression subcommands through the real binary on the tiny fixture (hidden 48,
//! intermediate 77, 2 layers): every method runs, verifies and is deterministic across thread
//! counts; sparsity and bit width are exact as counted from the written safetensors; tensors
//! left alone are bitwise the input's; bad input exits 2 and writes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::synth::{char_tokenizer, corpus};
use common::{fixture, intervene, path_str, split_safetensors};
use serde_json::Value;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
    calib: PathBuf,
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
    let calib = root.join("calib.jsonl");
    std::fs::write(&calib, corpus(6, 300, 12345)).unwrap();
    Setup {
        _tmp: tmp,
        root,
        base,
        calib,
    }
}

/// name -> (shape, values) of a checkpoint's F32 safetensors.
fn tensors(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (header, data) = split_safetensors(&bytes);
    let mut out = BTreeMap::new();
    for (name, v) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(v["dtype"], "F32", "{name}");
        let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
        let off: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
        let vals = data[off[0]..off[1]]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.insert(name.clone(), (shape, vals));
    }
    out
}

fn is_linear(name: &str) -> bool {
    name.contains("_proj.weight")
}

fn calib_args<'a>(s: &'a Setup, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--calib",
        path_str(&s.calib),
        "--calib-samples",
        "8",
        "--seqlen",
        "32",
        "--calib-batch",
        "3",
    ];
    v.extend_from_slice(rest);
    v
}

/// Runs `method` three times (threads 2, 1, 2) and checks exit, verify and identical ids.
fn run_three(s: &Setup, tag: &str, method: &str, args: &[&str]) -> PathBuf {
    let mut ids = Vec::new();
    for (i, threads) in ["2", "1", "2"].iter().enumerate() {
        let out = s.root.join(format!("{tag}-{i}"));
        let mut a = vec![
            "--threads",
            threads,
            method,
            path_str(&s.base),
            "-o",
            path_str(&out),
        ];
        a.extend_from_slice(args);
        let r = intervene(&a);
        assert_eq!(r.code, 0, "{method} {args:?}: {r}");
        ids.push(r.stdout.trim().to_string());
        let v = intervene(&["verify", path_str(&out)]);
        assert_eq!(v.code, 0, "verify {method}: {v}");
    }
    assert!(ids[0].starts_with("blake3:"), "{ids:?}");
    assert_eq!(ids[0], ids[1], "{method}: threads 2 vs 1");
    assert_eq!(ids[0], ids[2], "{method}: same command twice");
    s.root.join(format!("{tag}-0"))
}

fn report(dir: &Path) -> Value {
    let p: Value =
        serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap();
    let step = p["chain"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(step["category"], "compress");
    step["report"].clone()
}

/// Untouched tensors (everything but `touched`) are bitwise the input's.
fn assert_untouched(base: &Path, out: &Path, touched: impl Fn(&str) -> bool) {
    let (a, b) = (tensors(base), tensors(out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut changed = 0;
    for (name, (_, va)) in &a {
        let vb = &b[name].1;
        let same = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        if touched(name) {
            changed += usize::from(!same);
        } else {
            assert!(same, "{name} changed but should be left alone");
        }
    }
    assert!(changed > 0, "nothing changed");
}

fn max_distinct_per_group(vals: &[f32], cols: usize, g: usize) -> usize {
    let mut most = 0;
    for row in vals.chunks(cols) {
        for grp in row.chunks(g) {
            let mut v: Vec<u32> = grp.iter().map(|x| (x + 0.0).to_bits()).collect();
            v.sort_unstable();
            v.dedup();
            most = most.max(v.len());
        }
    }
    most
}

#[test]
fn quantisers_run_verify_and_use_at_most_2_pow_bits_values_per_group() {
    let s = setup();
    for (method, bits, extra) in [
        ("rtn", 4usize, vec![]),
        ("gptq", 3, calib_args(&s, &[])),
        (
            "gptq",
            4,
            calib_args(&s, &["--act-order", "--true-sequential", "--sym"]),
        ),
        (
            "awq",
            4,
            calib_args(
                &s,
                &["--awq-search-samples", "4", "--awq-search-seqlen", "16"],
            ),
        ),
    ] {
        let bits_s = bits.to_string();
        let mut args = vec!["--bits", bits_s.as_str(), "--group-size", "16"];
        args.extend(extra.iter().copied());
        let out = run_three(&s, &format!("{method}{bits}"), method, &args);
        let t = tensors(&out);
        let mut n = 0;
        for (name, (shape, vals)) in &t {
            if is_linear(name) {
                let d = max_distinct_per_group(vals, shape[1], 16);
                assert!(
                    d <= 1 << bits,
                    "{method} {name}: {d} distinct values in a group"
                );
                assert!(d > 1, "{method} {name}: degenerate");
                n += 1;
            }
        }
        assert_eq!(n, 14);
        // AWQ folds its scales into the norms; the others touch only the linears.
        let awq = method == "awq";
        assert_untouched(&s.base, &out, |n| {
            is_linear(n) || (awq && n.contains("layernorm"))
        });
        let r = report(&out);
        assert_eq!(r["bits"], bits as u64);
        assert_eq!(r["group_size"], 16);
        assert_eq!(r["tensors_compressed"], 14);
        assert!(r["max_distinct_per_group"].as_u64().unwrap() <= 1 << bits);
        // 77 = 4·16 + 13: down_proj's last group is shorter, and the record says so.
        let note = r["note"].as_str().unwrap_or_default();
        assert!(note.contains("77 inputs: last group 13 of 16"), "{r}");
        if method != "rtn" {
            assert!(r["calibration"]["file_blake3"]
                .as_str()
                .unwrap()
                .starts_with("blake3:"));
            assert_eq!(r["calibration"]["positions"].as_array().unwrap().len(), 8);
        }
        if method == "gptq" {
            assert_eq!(r["damping_retries"], 0);
            assert!(
                r["per_tensor"][0]["damp"]["percdamp_used"]
                    .as_f64()
                    .is_some(),
                "{r}"
            );
        }
    }
    // inspect shows the bit width and sparsity in readable lines.
    let i = intervene(&["inspect", path_str(&s.root.join("gptq4-0"))]);
    assert_eq!(i.code, 0, "{i}");
    assert!(
        i.stdout.contains("report bits: 4") && i.stdout.contains("report sparsity_overall"),
        "{i}"
    );
    assert!(i.stdout.contains("report per_tensor: 14 tensors"), "{i}");
}

#[test]
fn pruners_hit_their_exact_sparsity() {
    let s = setup();
    for (method, extra) in [
        ("magnitude", vec![]),
        ("wanda", calib_args(&s, &[])),
        ("sparsegpt", calib_args(&s, &[])),
    ] {
        let mut args = vec!["--sparsity", "0.5"];
        args.extend(extra.iter().copied());
        let out = run_three(&s, method, method, &args);
        assert_untouched(&s.base, &out, is_linear);
        let r = report(&out);
        let per: BTreeMap<String, Value> = r["per_tensor"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
            .collect();
        let (mut zeros_all, mut numel_all) = (0usize, 0usize);
        for (name, (shape, vals)) in tensors(&out) {
            if !is_linear(&name) {
                continue;
            }
            let (rows, cols) = (shape[0], shape[1]);
            let zeros = vals.iter().filter(|&&v| v == 0.0).count();
            match method {
                // Wanda: exactly floor(cols·s) per row.
                "wanda" => {
                    for row in vals.chunks(cols) {
                        assert_eq!(
                            row.iter().filter(|&&v| v == 0.0).count(),
                            cols / 2,
                            "{name}"
                        );
                    }
                }
                // Magnitude: one threshold per layer, inclusive: floor(n·s) + 1. SparseGPT: the
                // same per 128-column block, and every tiny tensor is one block.
                _ => assert_eq!(zeros, rows * cols / 2 + 1, "{method} {name}"),
            }
            assert_eq!(per[&name]["zeros"], zeros as u64, "{name}");
            zeros_all += zeros;
            numel_all += rows * cols;
        }
        let overall = r["sparsity_overall"].as_f64().unwrap();
        assert!((overall - zeros_all as f64 / numel_all as f64).abs() < 1e-12);
    }
}

#[test]
fn nm_pattern_keeps_n_of_every_m() {
    let s = setup();
    // 77 is not a multiple of 4: down_proj must be skipped, and the error says so.
    let out = s.root.join("bad-nm");
    let r = intervene(&[
        "magnitude",
        path_str(&s.base),
        "-o",
        path_str(&out),
        "--pattern",
        "2:4",
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("down_proj") && r.stderr.contains("77"),
        "{r}"
    );
    assert!(!out.exists());
    for (method, pattern, keep) in [
        ("wanda", "1:4", 1),
        ("sparsegpt", "2:4", 2),
        ("magnitude", "3:4", 3),
    ] {
        let out = s.root.join(format!("{method}-nm"));
        let mut a = vec![
            method,
            path_str(&s.base),
            "-o",
            path_str(&out),
            "--pattern",
            pattern,
            "--skip",
            "down_proj",
        ];
        let c = calib_args(&s, &[]);
        if method != "magnitude" {
            a.extend(c.iter().copied());
        }
        let r = intervene(&a);
        assert_eq!(r.code, 0, "{r}");
        assert_untouched(&s.base, &out, |n| is_linear(n) && !n.contains("down_proj"));
        for (name, (shape, vals)) in tensors(&out) {
            if !is_linear(&name) || name.contains("down_proj") {
                continue;
            }
            for row in vals.chunks(shape[1]) {
                for g in row.chunks(4) {
                    let nz = g.iter().filter(|&&v| v != 0.0).count();
                    assert!(
                        nz <= keep,
                        "{method} {pattern} {name}: {nz} nonzero in {g:?}"
                    );
                }
            }
            let zeros = vals.iter().filter(|&&v| v == 0.0).count();
            assert_eq!(zeros, vals.len() / 4 * (4 - keep), "{method} {name}");
        }
    }
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let s = setup();
    let short = s.root.join("short.txt");
    std::fs::write(&short, "too short for a window").unwrap();
    let nan = s.root.join("nan");
    common::copy_dir(&s.base, &nan);
    {
        let path = nan.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let (header, mut data) = split_safetensors(&bytes);
        let off = header["model.layers.1.self_attn.q_proj.weight"]["data_offsets"][0]
            .as_u64()
            .unwrap() as usize;
        data[off + 8..off + 12].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&path, common::join_safetensors(&header, &data)).unwrap();
    }
    let base = path_str(&s.base);
    let calib = path_str(&s.calib);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["magnitude", base, "--sparsity", "1.0"], "[0, 1)"),
        (vec!["magnitude", base, "--sparsity", "-0.1"], "[0, 1)"),
        (vec!["rtn", base, "--bits", "1"], "2..=8"),
        (vec!["rtn", base, "--bits", "9"], "2..=8"),
        (vec!["rtn", base, "--group-size", "0"], "group size"),
        (vec!["rtn", base, "--group-size", "-2"], "group size"),
        (
            vec!["wanda", base, "--pattern", "4:4", "--calib", calib],
            "0 < N < M",
        ),
        (
            vec!["wanda", base, "--pattern", "5:4", "--calib", calib],
            "0 < N < M",
        ),
        (
            vec!["gptq", base, "--calib", path_str(&short), "--seqlen", "64"],
            "shorter than one window",
        ),
        (vec!["rtn", path_str(&nan)], "non-finite"),
        (
            vec!["gptq", path_str(&nan), "--calib", calib, "--seqlen", "32"],
            "non-finite",
        ),
        (vec!["gptq", base], "--calib"),
        (vec!["rtn", base, "--sparsity", "0.5"], "does not apply"),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let out = s.root.join(format!("bad{i}"));
        let mut a = args.clone();
        a.extend(["-o", path_str(&out)]);
        let r = intervene(&a);
        assert_eq!(r.code, 2, "{args:?}: {r}");
        assert!(
            r.stderr.contains(want),
            "{args:?}: expected `{want}` in {r}"
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    // No staging directories were left behind either.
    let left: Vec<_> = std::fs::read_dir(&s.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn layers_and_skip_restrict_what_changes() {
    let s = setup();
    let out = s.root.join("wanda-l1");
    let mut a = vec![
        "wanda",
        path_str(&s.base),
        "-o",
        path_str(&out),
        "--layers",
        "1",
        "--skip",
        "*.o_proj.*",
    ];
    let c = calib_args(&s, &[]);
    a.extend(c.iter().copied());
    let r = intervene(&a);
    assert_eq!(r.code, 0, "{r}");
    assert_untouched(&s.base, &out, |n| {
        is_linear(n) && n.starts_with("model.layers.1.") && !n.contains("o_proj")
    });
    assert_eq!(report(&out)["tensors_compressed"], 6);
}

/// `--device gpu` (any adapter; lavapipe in CI) runs the calibration forwards, the statistics
/// and the RTN/mask kernels as shaders. RTN and magnitude use no calibration and their kernels
/// are bit-identical to the CPU's, so their outputs are too; the calibrated methods see device
/// activations and an f32 Hessian, so they agree with the CPU run up to rare rounding flips
/// (`GPU_AGREEMENT` of the weights bit for bit; SparseGPT's OBS update moves every kept
/// weight, so there the masks agree and the kept weights are within `SPARSEGPT_TOL`). Either way the step records the adapter,
/// the output verifies, and a second GPU run gives the same id.
#[cfg(feature = "gpu")]
#[test]
fn compression_on_the_gpu_matches_the_cpu() {
    /// Share of linear weights (and of pruned positions) that must equal the CPU run's exactly.
    const GPU_AGREEMENT: f64 = 0.99;
    /// Largest difference of a kept SparseGPT weight, relative to the tensor's largest weight.
    const SPARSEGPT_TOL: f32 = 1e-3;
    let s = setup();
    let cases: Vec<(&str, Vec<&str>, bool)> = vec![
        ("rtn", vec!["--bits", "4", "--group-size", "16"], true),
        ("magnitude", vec!["--sparsity", "0.5"], true),
        (
            "magnitude",
            vec!["--pattern", "2:4", "--skip", "down_proj"],
            true,
        ),
        (
            "gptq",
            calib_args(
                &s,
                &["--bits", "4", "--group-size", "16", "--true-sequential"],
            ),
            false,
        ),
        ("sparsegpt", calib_args(&s, &["--sparsity", "0.5"]), false),
        ("wanda", calib_args(&s, &["--sparsity", "0.5"]), false),
        (
            "wanda",
            calib_args(&s, &["--pattern", "2:4", "--skip", "down_proj"]),
            false,
        ),
    ];
    for (i, (method, args, exact)) in cases.into_iter().enumerate() {
        let run_on = |device: &str, tag: &str| {
            let out = s.root.join(format!("gpu{i}-{tag}"));
            let mut a = vec!["--device", device, method, path_str(&s.base), "-o"];
            a.push(path_str(&out));
            a.extend(args.iter().copied());
            let r = intervene(&a);
            (r, out)
        };
        let (g, gdir) = run_on("gpu", "a");
        if g.code == 2 && g.stderr.contains("--device gpu") {
            assert!(
                std::env::var_os("INTERVENE_REQUIRE_GPU").is_none(),
                "INTERVENE_REQUIRE_GPU is set but: {g}"
            );
            eprintln!("skipping: no GPU adapter: {}", g.stderr.trim());
            return;
        }
        assert_eq!(g.code, 0, "{method} {args:?} on the gpu: {g}");
        let (g2, _) = run_on("gpu", "b");
        assert_eq!(g2.code, 0, "{g2}");
        assert_eq!(g.stdout, g2.stdout, "{method}: two GPU runs differ");
        let (c, cdir) = run_on("cpu", "c");
        assert_eq!(c.code, 0, "{c}");
        let v = intervene(&["verify", path_str(&gdir)]);
        assert_eq!(v.code, 0, "verify {method} gpu: {v}");
        let p: Value =
            serde_json::from_slice(&std::fs::read(gdir.join("provenance.json")).unwrap()).unwrap();
        let step = p["chain"].as_array().unwrap().last().unwrap();
        assert!(
            step["device"].as_str().unwrap().starts_with("gpu:"),
            "{method}: device {}",
            step["device"]
        );
        let (tg, tc) = (tensors(&gdir), tensors(&cdir));
        let (mut same, mut total, mut zeros_same, mut zeros) = (0usize, 0usize, 0usize, 0usize);
        for (name, (_, vc)) in &tc {
            let vg = &tg[name].1;
            if !is_linear(name) {
                let bitwise = vg.iter().zip(vc).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(bitwise, "{method}: {name} is not a target but differs");
                continue;
            }
            let scale = vc.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in vg.iter().zip(vc) {
                // SparseGPT: a weight both runs kept counts as agreeing when it is close.
                let kept_close = method == "sparsegpt" && *a != 0.0 && *b != 0.0;
                if kept_close {
                    assert!(
                        (a - b).abs() <= SPARSEGPT_TOL * scale,
                        "sparsegpt {name}: kept weight {a} on the gpu, {b} on the cpu"
                    );
                }
                total += 1;
                same += usize::from(kept_close || a.to_bits() == b.to_bits());
                if *b == 0.0 || *a == 0.0 {
                    zeros += 1;
                    zeros_same += usize::from(*a == 0.0 && *b == 0.0);
                }
            }
        }
        let frac = same as f64 / total as f64;
        if exact {
            assert_eq!(
                same, total,
                "{method} {args:?}: GPU output differs from the CPU's"
            );
        } else {
            assert!(
                frac >= GPU_AGREEMENT,
                "{method} {args:?}: {same} of {total} weights equal the CPU's"
            );
            let zfrac = zeros_same as f64 / zeros.max(1) as f64;
            assert!(
                zfrac >= GPU_AGREEMENT,
                "{method} {args:?}: zeros agree on {zeros_same} of {zeros}"
            );
        }
    }
}

/// `--calib-packed` draws windows from the documents joined into one stream, so documents
/// shorter than a window still calibrate; without it such a corpus is refused (exit 2). The
/// step records the packing and the windows are contiguous slices of the joined stream.
#[test]
fn packed_calibration_windows_span_documents() {
    let s = setup();
    let short = s.root.join("short.jsonl");
    let docs: Vec<String> = (0..20)
        .map(|i| format!("{{\"text\": \"document {i} holds a few short words, no more\"}}"))
        .collect();
    std::fs::write(&short, docs.join("\n")).unwrap();
    let run = |tag: &str, extra: &[&str]| {
        let out = s.root.join(tag);
        let mut a = vec![
            "gptq",
            path_str(&s.base),
            "-o",
            path_str(&out),
            "--calib",
            path_str(&short),
            "--calib-samples",
            "4",
            "--seqlen",
            "64",
            "--bits",
            "4",
        ];
        a.extend_from_slice(extra);
        (intervene(&a), out)
    };
    let (r, out) = run("unpacked", &[]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("shorter than one window"), "{r}");
    assert!(!out.exists());
    let (r, out) = run("packed", &["--calib-packed"]);
    assert_eq!(r.code, 0, "{r}");
    let p: Value =
        serde_json::from_slice(&std::fs::read(out.join("provenance.json")).unwrap()).unwrap();
    let step = p["chain"].as_array().unwrap().last().unwrap();
    assert_eq!(step["params"]["calib"]["packed"], true, "{step}");
    let cal = &step["report"]["calibration"];
    assert_eq!(cal["packed"], true, "{cal}");
    assert_eq!(cal["documents"], 20, "{cal}");
    for pos in cal["positions"].as_array().unwrap() {
        assert_eq!(pos[0], 0, "packed windows index the joined stream: {pos}");
    }
    // Methods without calibration refuse the flag.
    let r = intervene(&[
        "rtn",
        path_str(&s.base),
        "-o",
        path_str(&s.root.join("rtn-packed")),
        "--calib-packed",
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--calib-packed"), "{r}");
}
