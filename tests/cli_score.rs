//! `intervene score` and `intervene report` through the real binary on the tiny fixture: two
//! real lineages built with the CLI in both orders (magnitude then rtn, rtn then magnitude),
//! evaluated (MC accuracy and perplexity on fixture data), scored; the numbers are recomputed
//! here from the recorded evaluations; mismatched pairs (different params, different base,
//! the same order twice) exit 1 naming the reason.

mod common;

use std::path::{Path, PathBuf};

use common::{copy_dir, fixture, intervene, path_str};
use serde_json::Value;

struct Sweep {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
}

fn run_ok(args: &[&str]) -> String {
    let r = intervene(args);
    assert_eq!(r.code, 0, "{args:?}\n{r}");
    r.stdout
}

fn p(dir: &Path) -> &str {
    path_str(dir)
}

/// Evaluates `dir` on the two fixture criteria (5 MMLU questions, 3 perplexity windows).
fn evaluate(dir: &Path) {
    let mc = fixture("data/mmlu/college_biology_test.csv");
    let wiki = fixture("data/wikitext2_test_raw_first200.txt");
    run_ok(&[
        "eval",
        p(dir),
        "--task",
        "mc",
        "--data",
        p(&mc),
        "--limit",
        "5",
        "-q",
    ]);
    run_ok(&[
        "eval",
        p(dir),
        "--task",
        "ppl",
        "--data",
        p(&wiki),
        "--limit",
        "3",
        "-q",
    ]);
}

fn setup() -> Sweep {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let base = root.join("base");
    run_ok(&["import", p(&fixture("tiny/tiny.gguf")), "-o", p(&base)]);
    evaluate(&base);
    Sweep {
        _tmp: tmp,
        root,
        base,
    }
}

impl Sweep {
    /// Applies `op` with `flags` to `input` and evaluates the result.
    fn step(&self, input: &Path, name: &str, op: &str, flags: &[&str], eval: bool) -> PathBuf {
        let out = self.root.join(name);
        let mut args = vec![op, p(input), "-o", p(&out), "-q"];
        args.extend_from_slice(flags);
        run_ok(&args);
        if eval {
            evaluate(&out);
        }
        out
    }
}

fn provenance(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap()
}

/// The metric `key` of the evaluation of `task` recorded for the checkpoint itself.
fn recorded(dir: &Path, task: &str, key: &str) -> f64 {
    let prov = provenance(dir);
    let id = prov["id"].clone();
    prov["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["checkpoint"] == id && e["task"] == task)
        .unwrap_or_else(|| panic!("no {task} evaluation of {}", dir.display()))["metrics"][key]
        .as_f64()
        .unwrap()
}

fn row<'a>(rows: &'a Value, kind: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["criterion"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} row in {rows}"))
}

/// Exact decimal metrics: both sides are computed from the same recorded f64s.
const TOL: f64 = 1e-12;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= TOL, "{a} vs {b}");
}

const SPARSE: [&str; 2] = ["--sparsity", "0.5"];
const BITS4: [&str; 2] = ["--bits", "4"];

#[test]
fn two_orders_score_from_provenance_and_mismatches_are_refused() {
    let s = setup();
    let m = s.step(&s.base, "m", "magnitude", &SPARSE, true);
    let mr = s.step(&m, "mr", "rtn", &BITS4, true);
    let r = s.step(&s.base, "r", "rtn", &BITS4, true);
    let rm = s.step(&r, "rm", "magnitude", &SPARSE, true);

    let out = run_ok(&["score", p(&mr), p(&rm), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["base"], provenance(&s.base)["id"]);
    assert_eq!(v["a"]["label"], "magnitude 0.5");
    assert_eq!(v["b"]["label"], "rtn 4-bit");
    let acc = row(&v["rows"], "utility");
    let (s_ab, s_ba) = (recorded(&mr, "mc", "acc"), recorded(&rm, "mc", "acc"));
    close(acc["s_ab"].as_f64().unwrap(), s_ab);
    close(acc["s_ba"].as_f64().unwrap(), s_ba);
    close(acc["e_of"].as_f64().unwrap(), (1.0 - s_ab).min(1.0 - s_ba));
    close(acc["e_os"].as_f64().unwrap(), (s_ab - s_ba).abs());
    // Utility is both compressors' own criterion.
    assert_eq!(
        acc["own"],
        serde_json::json!(["magnitude 0.5", "rtn 4-bit"])
    );
    let ppl = row(&v["rows"], "perplexity");
    close(ppl["s_ab"].as_f64().unwrap(), recorded(&mr, "ppl", "ppl"));
    close(ppl["s_ba"].as_f64().unwrap(), recorded(&rm, "ppl", "ppl"));
    assert!(ppl["e_of"].is_null() && ppl["e_os"].is_null(), "{ppl}");
    // The two orders really differ here (pruning then quantising is not the reverse).
    assert_ne!(
        recorded(&mr, "ppl", "ppl"),
        recorded(&rm, "ppl", "ppl"),
        "the orders gave the same perplexity"
    );

    // Swapping the arguments swaps the orders, not the metrics.
    let w: Value = serde_json::from_str(&run_ok(&["score", p(&rm), p(&mr), "--json"])).unwrap();
    let acc2 = row(&w["rows"], "utility");
    assert_eq!(acc2["s_ab"], acc["s_ba"]);
    assert_eq!(acc2["e_of"], acc["e_of"]);
    assert_eq!(acc2["e_os"], acc["e_os"]);

    // The text table names the criteria.
    let text = run_ok(&["score", p(&mr), p(&rm)]);
    assert!(
        text.contains("utility_acc (college_biology_test.csv)") && text.contains("E_OF"),
        "{text}"
    );

    // One lineage: the first step's criteria before and after the second step.
    let one: Value = serde_json::from_str(&run_ok(&["score", p(&mr), "--json"])).unwrap();
    assert_eq!(one["intermediate"], provenance(&m)["id"]);
    let acc = row(&one["rows"], "utility");
    close(
        acc["base"].as_f64().unwrap(),
        recorded(&s.base, "mc", "acc"),
    );
    close(acc["after_a"].as_f64().unwrap(), recorded(&m, "mc", "acc"));
    close(acc["after_b"].as_f64().unwrap(), recorded(&mr, "mc", "acc"));
    let ppl = row(&one["rows"], "perplexity");
    close(
        ppl["delta"].as_f64().unwrap(),
        recorded(&mr, "ppl", "ppl") - recorded(&m, "ppl", "ppl"),
    );

    // Different params: rtn at 8 bits in the other order.
    let r8 = s.step(&s.base, "r8", "rtn", &["--bits", "8"], false);
    let r8m = s.step(&r8, "r8m", "magnitude", &SPARSE, true);
    let e = intervene(&["score", p(&mr), p(&r8m)]);
    assert_eq!(e.code, 1, "{e}");
    assert!(
        e.stderr.contains("params.quant.bits: 4 vs 8") && e.stderr.contains("chain[2] `rtn`"),
        "{e}"
    );

    // Different base: the same two steps from an f16 import.
    let base16 = s.root.join("base16");
    run_ok(&[
        "import",
        p(&fixture("tiny/tiny.gguf")),
        "-o",
        p(&base16),
        "--dtype",
        "f16",
    ]);
    let r16 = s.step(&base16, "r16", "rtn", &BITS4, false);
    let r16m = s.step(&r16, "r16m", "magnitude", &SPARSE, false);
    let e = intervene(&["score", p(&mr), p(&r16m)]);
    assert_eq!(e.code, 1, "{e}");
    assert!(e.stderr.contains("different bases"), "{e}");

    // The same order twice.
    let mr2 = s.root.join("mr2");
    copy_dir(&mr, &mr2);
    let e = intervene(&["score", p(&mr), p(&mr2)]);
    assert_eq!(e.code, 1, "{e}");
    assert!(e.stderr.contains("the same order twice"), "{e}");

    // A one-step lineage is no composition; a pair without common evaluations has no score.
    let e = intervene(&["score", p(&m), p(&rm)]);
    assert_eq!(e.code, 1, "{e}");
    assert!(e.stderr.contains("1 step(s) after its import"), "{e}");
    let rm_bare = s.step(&r, "rm_bare", "magnitude", &SPARSE, false);
    let e = intervene(&["score", p(&mr), p(&rm_bare)]);
    assert_eq!(e.code, 1, "{e}");
    assert!(e.stderr.contains("no criterion was evaluated"), "{e}");

    // Input errors exit 2 naming the directory.
    let missing = s.root.join("nope");
    let e = intervene(&["score", p(&mr), p(&missing)]);
    assert_eq!(e.code, 2, "{e}");
    assert!(e.stderr.contains("nope"), "{e}");
    let e = intervene(&["score", p(&mr), p(&rm), p(&m)]);
    assert_eq!(e.code, 2, "{e}");

    // Groups: each order averaged over its lineages before min and abs.
    let m25 = s.step(&s.base, "m25", "magnitude", &["--sparsity", "0.25"], true);
    let m25r = s.step(&m25, "m25r", "rtn", &BITS4, true);
    let rm25 = s.step(&r, "rm25", "magnitude", &["--sparsity", "0.25"], true);
    let g: Value = serde_json::from_str(&run_ok(&[
        "score",
        "--ab",
        p(&mr),
        p(&m25r),
        "--ba",
        p(&rm25),
        p(&rm),
        "--json",
    ]))
    .unwrap();
    let ppl = row(&g["rows"], "perplexity");
    close(
        ppl["s_ab"].as_f64().unwrap(),
        (recorded(&mr, "ppl", "ppl") + recorded(&m25r, "ppl", "ppl")) / 2.0,
    );
    close(
        ppl["s_ba"].as_f64().unwrap(),
        (recorded(&rm, "ppl", "ppl") + recorded(&rm25, "ppl", "ppl")) / 2.0,
    );
    let acc = row(&g["rows"], "utility");
    let ab = (recorded(&mr, "mc", "acc") + recorded(&m25r, "mc", "acc")) / 2.0;
    let ba = (recorded(&rm, "mc", "acc") + recorded(&rm25, "mc", "acc")) / 2.0;
    close(acc["e_os"].as_f64().unwrap(), (ab - ba).abs());
    assert_eq!(acc["pairs"], 2);
    let e = intervene(&["score", "--ab", p(&mr), p(&m25r), "--ba", p(&rm)]);
    assert_eq!(e.code, 1, "{e}");
    assert!(e.stderr.contains("2 lineage(s) in one order and 1"), "{e}");

    // The report: tables, heat maps, line plots; unpaired lineages listed; atomic output.
    let out = s.root.join("report");
    let text = run_ok(&[
        "report",
        p(&mr),
        p(&rm),
        p(&m25r),
        p(&rm25),
        p(&r8m),
        p(&m),
        "-o",
        p(&out),
        "-q",
    ]);
    assert!(text.contains("2 compositions from 6 lineages"), "{text}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## compress × compress"), "{md}");
    assert!(md.contains("| magnitude 0.5 ↔ rtn 4-bit |"), "{md}");
    assert!(md.contains("| *Average* |"), "{md}");
    assert!(md.contains("## Not scored") && md.contains("r8m"), "{md}");
    let heat = out.join("heat_compress_compress_utility_acc_college_biology_test_csv.svg");
    let svg = std::fs::read_to_string(&heat).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("E_OS"), "{svg}");
    let lines = std::fs::read_to_string(out.join("lines_rtn_4_bit_magnitude.svg")).unwrap();
    // Two strengths, two orders, two criteria: 8 points.
    assert_eq!(lines.matches("<circle").count(), 8, "{lines}");
    let scores: Value =
        serde_json::from_slice(&std::fs::read(out.join("scores.json")).unwrap()).unwrap();
    assert_eq!(scores["scores"].as_array().unwrap().len(), 2);
    let e = intervene(&["report", p(&mr), p(&rm), "-o", p(&out)]);
    assert_eq!(e.code, 2, "{e}");
    assert!(e.stderr.contains("already exists"), "{e}");
    let leftovers: Vec<_> = std::fs::read_dir(&s.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
