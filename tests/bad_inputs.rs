//! Hostile and malformed inputs of every kind the tool reads, each run through the real binary:
//! every one must be refused with exit 2 (input or usage error; a structurally valid but
//! inconsistent provenance is a failed check, exit 1), a one-line message that names the file
//! (or the flag) at fault, and nothing written at OUT. With `--nocapture` the test prints the
//! Markdown table recorded in bench/RESULTS.md ("Trust (issue 10)").

mod common;

use std::path::{Path, PathBuf};

use common::synth::char_tokenizer;
use common::{copy_dir, fixture, gguf_bytes, intervene, path_str, split_safetensors, GgufMeta};
use serde_json::{json, Value};

struct Case {
    kind: &'static str,
    what: &'static str,
    args: Vec<String>,
    code: i32,
    /// A substring the message must contain (the file name or flag, and the fault).
    want: Vec<String>,
}

struct Ctx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// An imported tiny checkpoint with a character tokenizer (for eval and verify cases).
    base: PathBuf,
    n: usize,
}

impl Ctx {
    fn file(&mut self, name: &str, bytes: &[u8]) -> PathBuf {
        self.n += 1;
        let dir = self.root.join(format!("in{}", self.n));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A copy of the tiny HF model whose model.safetensors is replaced by `bytes`.
    fn hf_with(&mut self, bytes: &[u8]) -> PathBuf {
        self.n += 1;
        let dir = self.root.join(format!("hf{}", self.n));
        copy_dir(&fixture("tiny/hf"), &dir);
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        dir
    }

    /// A copy of the tiny HF model with config.json replaced.
    fn hf_config(&mut self, text: &str) -> PathBuf {
        self.n += 1;
        let dir = self.root.join(format!("hfc{}", self.n));
        copy_dir(&fixture("tiny/hf"), &dir);
        std::fs::write(dir.join("config.json"), text).unwrap();
        dir
    }

    /// A copy of `base` with provenance.json replaced.
    fn with_provenance(&mut self, bytes: &[u8]) -> PathBuf {
        self.n += 1;
        let dir = self.root.join(format!("prov{}", self.n));
        copy_dir(&self.base, &dir);
        std::fs::write(dir.join("provenance.json"), bytes).unwrap();
        dir
    }

    fn out(&self) -> PathBuf {
        self.root.join(format!("out{}", self.n))
    }
}

fn s(p: &Path) -> String {
    path_str(p).to_string()
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn safetensors_with(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn tiny_weights() -> Vec<u8> {
    std::fs::read(fixture("tiny/hf/model.safetensors")).unwrap()
}

fn cases(c: &mut Ctx) -> Vec<Case> {
    let mut v = Vec::new();
    let import = |c: &mut Ctx, kind, what, src: PathBuf, want: &[&str]| {
        let out = c.out();
        let mut w: Vec<String> = want.iter().map(|x| x.to_string()).collect();
        w.push(file_name(&src));
        Case {
            kind,
            what,
            args: vec!["import".into(), s(&src), "-o".into(), s(&out)],
            code: 2,
            want: w,
        }
    };
    // --- safetensors (import of a HF directory) ---
    let w = tiny_weights();
    let d = c.hf_with(&w[..w.len() / 2]);
    v.push(import(
        c,
        "safetensors",
        "truncated to half its size",
        d,
        &["out of range"],
    ));
    let d = c.hf_with(&[1, 2, 3]);
    v.push(import(
        c,
        "safetensors",
        "3 bytes (shorter than the length prefix)",
        d,
        &["header length"],
    ));
    let mut b = w.clone();
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let d = c.hf_with(&b);
    v.push(import(
        c,
        "safetensors",
        "header length u64::MAX",
        d,
        &["exceeds the"],
    ));
    let mut b = w.clone();
    b[..8].copy_from_slice(&(w.len() as u64).to_le_bytes());
    let d = c.hf_with(&b);
    v.push(import(
        c,
        "safetensors",
        "header length past end of file",
        d,
        &["runs past the end"],
    ));
    let d = c.hf_with(&safetensors_with("{\"a\": [1, 2", &[]));
    v.push(import(
        c,
        "safetensors",
        "header not JSON",
        d,
        &["not valid JSON"],
    ));
    let bad_dtype = |dtype: &str| {
        let (mut h, data) = split_safetensors(&w);
        h["lm_head.weight"]["dtype"] = Value::from(dtype);
        common::join_safetensors(&h, &data)
    };
    let d = c.hf_with(&bad_dtype("Q7"));
    v.push(import(
        c,
        "safetensors",
        "unknown dtype `Q7`",
        d,
        &["unknown dtype"],
    ));
    let d = c.hf_with(&bad_dtype("I64"));
    v.push(import(
        c,
        "safetensors",
        "unsupported dtype `I64`",
        d,
        &["unsupported dtype"],
    ));
    let (mut h, data) = split_safetensors(&w);
    h["lm_head.weight"]["shape"] = json!([u64::MAX, 4]);
    let d = c.hf_with(&common::join_safetensors(&h, &data));
    v.push(import(
        c,
        "safetensors",
        "shape product overflows u64",
        d,
        &["overflows"],
    ));
    let (mut h, data) = split_safetensors(&w);
    let off = h["model.norm.weight"]["data_offsets"].clone();
    h["lm_head.weight"]["data_offsets"] = json!([off[0], off[1]]);
    h["lm_head.weight"]["shape"] = json!([48]);
    let d = c.hf_with(&common::join_safetensors(&h, &data));
    v.push(import(
        c,
        "safetensors",
        "lm_head given another tensor's byte range",
        d,
        &["data_offsets"],
    ));
    let (mut h, data) = split_safetensors(&w);
    h["model.norm.weight"]["shape"] = json!([12, 4]);
    let d = c.hf_with(&common::join_safetensors(&h, &data));
    v.push(import(
        c,
        "safetensors",
        "shape disagrees with config.json",
        d,
        &["disagrees with config.json"],
    ));

    // --- config.json ---
    let d = c.hf_config("{\"hidden_size\": ");
    v.push(import(
        c,
        "config.json",
        "not JSON",
        d.join("config.json"),
        &["config"],
    ));
    let fix = |v: &mut Vec<Case>| {
        // The import source is the directory; the message names config.json.
        let last = v.last_mut().unwrap();
        last.args[1] = s(Path::new(&last.args[1]).parent().unwrap());
    };
    fix(&mut v);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny/hf/config.json")).unwrap()).unwrap();
    let mut zero = cfg.clone();
    zero["num_attention_heads"] = json!(0);
    let d = c.hf_config(&zero.to_string());
    v.push(import(
        c,
        "config.json",
        "num_attention_heads 0",
        d.join("config.json"),
        &["num_attention_heads"],
    ));
    fix(&mut v);
    let mut huge = cfg.clone();
    huge["vocab_size"] = json!(u64::MAX);
    let d = c.hf_config(&huge.to_string());
    v.push(import(
        c,
        "config.json",
        "vocab_size u64::MAX",
        d.join("config.json"),
        &["disagrees"],
    ));
    fix(&mut v);

    // --- GGUF (import of a .gguf file) ---
    let g = std::fs::read(fixture("tiny/tiny.gguf")).unwrap();
    let mut b = g.clone();
    b[..4].copy_from_slice(b"GGUX");
    let f = c.file("bad_magic.gguf", &b);
    v.push(import(c, "GGUF", "bad magic `GGUX`", f, &[]));
    let mut b = g.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    let f = c.file("v1.gguf", &b);
    v.push(import(c, "GGUF", "version 1", f, &["version"]));
    let mut b = g.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    let f = c.file("big_endian.gguf", &b);
    v.push(import(
        c,
        "GGUF",
        "big-endian version field",
        f,
        &["big-endian"],
    ));
    let mut b = g.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let f = c.file("tensor_count.gguf", &b);
    v.push(import(
        c,
        "GGUF",
        "tensor_count u64::MAX",
        f,
        &["tensor_count"],
    ));
    let mut b = g.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let f = c.file("kv_count.gguf", &b);
    v.push(import(c, "GGUF", "kv_count 2^40", f, &["kv_count"]));
    let mut b = g.clone();
    b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let f = c.file("key_len.gguf", &b);
    v.push(import(c, "GGUF", "first key length 2^64-4", f, &["key"]));
    let f = c.file("truncated.gguf", &g[..g.len() / 2]);
    v.push(import(c, "GGUF", "truncated to half its size", f, &[]));
    let f = c.file("empty.gguf", &[]);
    v.push(import(c, "GGUF", "empty file", f, &[]));
    let bytes = gguf_bytes(
        &[("general.architecture", GgufMeta::Str("llama"))],
        &[("token_embd.weight", vec![4, 4], 99, vec![0; 64])],
    );
    let f = c.file("type99.gguf", &bytes);
    v.push(import(
        c,
        "GGUF",
        "tensor of unknown ggml type 99",
        f,
        &["99"],
    ));
    let bytes = gguf_bytes(
        &[("general.architecture", GgufMeta::Str("llama"))],
        &[("token_embd.weight", vec![4, 4], 0, vec![0; 64])],
    );
    let f = c.file("no_meta.gguf", &bytes);
    v.push(import(
        c,
        "GGUF",
        "no vocabulary or llama metadata",
        f,
        &["tokenizer.ggml.tokens"],
    ));
    let bytes = gguf_bytes(
        &[("general.architecture", GgufMeta::Str("mamba"))],
        &[("token_embd.weight", vec![4, 4], 0, vec![0; 64])],
    );
    let f = c.file("mamba.gguf", &bytes);
    v.push(import(c, "GGUF", "architecture `mamba`", f, &["mamba"]));

    // --- provenance.json (verify) ---
    let verify = |c: &mut Ctx, what, bytes: &[u8], code, want: &[&str]| {
        let d = c.with_provenance(bytes);
        Case {
            kind: "provenance.json",
            what,
            args: vec!["verify".into(), s(&d)],
            code,
            want: want.iter().map(|x| x.to_string()).collect(),
        }
    };
    let good: Value =
        serde_json::from_slice(&std::fs::read(c.base.join("provenance.json")).unwrap()).unwrap();
    v.push(verify(
        c,
        "not JSON",
        b"{\"format\": ",
        2,
        &["provenance.json", "json"],
    ));
    let mut p = good.clone();
    p["format"] = json!("intervene-provenance/9");
    v.push(verify(
        c,
        "unknown format version",
        p.to_string().as_bytes(),
        2,
        &["format"],
    ));
    let mut p = good.clone();
    p["chain"] = json!("not a list");
    v.push(verify(
        c,
        "chain is a string",
        p.to_string().as_bytes(),
        2,
        &["provenance.json"],
    ));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    v.push(verify(
        c,
        "100000 nested arrays",
        deep.as_bytes(),
        2,
        &["provenance.json", "json"],
    ));
    let mut p = good.clone();
    p["chain"] = json!([]);
    p["chain_digests"] = json!([]);
    v.push(verify(
        c,
        "empty chain",
        p.to_string().as_bytes(),
        1,
        &["empty chain"],
    ));
    let mut p = good.clone();
    p["id"] = json!("blake3:0");
    v.push(verify(
        c,
        "id edited",
        p.to_string().as_bytes(),
        1,
        &["weights hash to"],
    ));
    // Over the size cap, without writing 256 MiB: a sparse file.
    let d = c.with_provenance(b"");
    std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("provenance.json"))
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    v.push(Case {
        kind: "provenance.json",
        what: "300 MiB (sparse) file",
        args: vec!["verify".into(), s(&d)],
        code: 2,
        want: vec!["exceeds the cap".into()],
    });

    // --- data files (eval on the tiny checkpoint; rtn/gptq calibration) ---
    let base = s(&c.base);
    let eval = |c: &mut Ctx, kind, what, task: &str, name: &str, bytes: &[u8], want: &[&str]| {
        let f = c.file(name, bytes);
        let mut w: Vec<String> = want.iter().map(|x| x.to_string()).collect();
        w.push(file_name(&f));
        Case {
            kind,
            what,
            args: vec![
                "eval".into(),
                base.clone(),
                "--task".into(),
                task.into(),
                "--data".into(),
                s(&f),
                "--no-record".into(),
            ],
            code: 2,
            want: w,
        }
    };
    let zsre = std::fs::read_to_string(fixture("data/zsre_mend_train_first20.jsonl")).unwrap();
    let first = zsre.lines().next().unwrap();
    v.push(eval(
        c,
        "requests",
        "line 2 not JSON",
        "edit",
        "r.jsonl",
        format!("{first}\n{{oops\n").as_bytes(),
        &["line 2"],
    ));
    let mut o: Value = serde_json::from_str(first).unwrap();
    o.as_object_mut().unwrap().remove("alt");
    v.push(eval(
        c,
        "requests",
        "zsRE record without `alt`",
        "edit",
        "r.jsonl",
        o.to_string().as_bytes(),
        &["line 1"],
    ));
    v.push(eval(
        c,
        "requests",
        "unknown record shape",
        "edit",
        "r.jsonl",
        b"{\"x\": 1}\n",
        &["line 1"],
    ));
    let mut o: Value = serde_json::from_str(first).unwrap();
    o["src"] = json!(7);
    v.push(eval(
        c,
        "requests",
        "`src` is a number",
        "edit",
        "r.jsonl",
        o.to_string().as_bytes(),
        &["src"],
    ));
    v.push(eval(
        c,
        "requests",
        "invalid UTF-8",
        "edit",
        "r.jsonl",
        b"{\"src\": \"\xff\xfe\"}\n",
        &["UTF-8"],
    ));
    v.push(eval(
        c,
        "MMLU CSV",
        "5 columns",
        "mc",
        "x_test.csv",
        b"q,a,b,c,d\n",
        &["line 1"],
    ));
    v.push(eval(
        c,
        "MMLU CSV",
        "answer letter `Z`",
        "mc",
        "x_test.csv",
        b"q,a,b,c,d,Z\n",
        &["line 1"],
    ));
    v.push(eval(
        c,
        "MMLU CSV",
        "unterminated quote",
        "mc",
        "x_test.csv",
        b"\"q,a,b,c,d,A\n",
        &["quote"],
    ));
    v.push(eval(
        c,
        "WMDP JSONL",
        "answer index 7 of 4",
        "mc",
        "w.jsonl",
        b"{\"question\": \"q\", \"choices\": [\"a\",\"b\",\"c\",\"d\"], \"answer\": 7}\n",
        &["line 1", "answer"],
    ));
    v.push(eval(
        c,
        "WMDP JSONL",
        "choices not a list",
        "mc",
        "w.jsonl",
        b"{\"question\": \"q\", \"choices\": \"abcd\", \"answer\": 0}\n",
        &["choices"],
    ));
    v.push(eval(
        c,
        "text corpus",
        "JSONL record without `text`",
        "ppl",
        "t.jsonl",
        b"{\"body\": \"x\"}\n",
        &["line 1", "text"],
    ));
    v.push(eval(
        c,
        "text corpus",
        "empty file",
        "ppl",
        "t.txt",
        b"",
        &[],
    ));
    v.push(eval(
        c,
        "text corpus",
        "invalid UTF-8",
        "ppl",
        "t.txt",
        b"abc \xc3\x28 def",
        &["UTF-8"],
    ));
    let f = c.file("short.jsonl", b"{\"text\": \"too short\"}\n");
    v.push(Case {
        kind: "text corpus",
        what: "calibration text shorter than one window",
        args: vec![
            "gptq".into(),
            base.clone(),
            "--calib".into(),
            s(&f),
            "--seqlen".into(),
            "64".into(),
            "-o".into(),
            s(&c.out()),
        ],
        code: 2,
        want: vec!["short.jsonl".into(), "shorter than one window".into()],
    });

    // --- command line ---
    let missing = c.root.join("no/such/dir/out");
    v.push(Case {
        kind: "command line",
        what: "output parent missing",
        args: vec!["rtn".into(), base.clone(), "-o".into(), s(&missing)],
        code: 2,
        want: vec!["-o/--output".into(), "does not exist".into()],
    });
    v.push(Case {
        kind: "command line",
        what: "output exists, no --force",
        args: vec!["rtn".into(), base.clone(), "-o".into(), base.clone()],
        code: 2,
        want: vec!["already exists".into()],
    });
    v.push(Case {
        kind: "command line",
        what: "--threads 0",
        args: vec![
            "--threads".into(),
            "0".into(),
            "verify".into(),
            base.clone(),
        ],
        code: 2,
        want: vec!["--threads".into()],
    });
    v.push(Case {
        kind: "command line",
        what: "input is not a checkpoint",
        args: vec!["rtn".into(), s(&c.root), "-o".into(), s(&c.out())],
        code: 2,
        want: vec!["config.json".into()],
    });
    v
}

/// The first line of stderr with the temp directory elided, for the table.
fn message(stderr: &str, root: &Path) -> String {
    let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.replace(path_str(root), "…");
    let mut m: String = line.chars().take(160).collect();
    if line.chars().count() > 160 {
        m.push('…');
    }
    m.replace('|', "\\|")
}

#[test]
fn every_bad_input_is_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let base = root.join("base");
    let r = intervene(&[
        "-q",
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
    let mut c = Ctx {
        _tmp: tmp,
        root: root.clone(),
        base,
        n: 0,
    };
    let cases = cases(&mut c);
    let mut table =
        String::from("| kind | bad input | command | exit | message |\n|---|---|---|---|---|\n");
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let r = intervene(&args);
        let task = args
            .iter()
            .position(|a| *a == "--task")
            .and_then(|i| args.get(i + 1))
            .map(|t| format!(" --task {t}"))
            .unwrap_or_default();
        table += &format!(
            "| {} | {} | `{}{task}` | {} | {} |\n",
            case.kind,
            case.what,
            args[0],
            r.code,
            message(&r.stderr, &root)
        );
        let ok = r.code == case.code
            && case.want.iter().all(|w| r.stderr.contains(w.as_str()))
            && !r.stderr.contains("panicked")
            && r.stderr.trim().lines().count() <= 2;
        if !ok {
            failures.push(format!(
                "{} / {}: want exit {} and {:?}\n{r}",
                case.kind, case.what, case.code, case.want
            ));
        }
    }
    // Nothing was written at any OUT.
    for i in 0..=c.n {
        assert!(!root.join(format!("out{i}")).exists(), "out{i} was written");
    }
    println!("{table}");
    println!(
        "{} bad inputs, {} refused as expected",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
