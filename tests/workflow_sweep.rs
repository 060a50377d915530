//! The Snakemake composition workflow (workflow/Snakefile) on the tiny fixture:
//! - the CI grid (tiny.yaml, magnitude 0.25/0.5 x rtn 4/8-bit, both orders): an interrupted
//!   sweep resumes without touching its finished cells, every pair is scored, a second run does
//!   nothing, and a deleted cell is rebuilt alone from its finished first step;
//! - the study's grid shape (tiny_mixed.yaml: memit, rmu, two compressors at two strengths,
//!   every cross-category pair in both orders): `score` and `report` handle edit, unlearn and
//!   compress cells together.
//!
//! Runs when INTERVENE_SNAKEMAKE names a snakemake executable (.ci/run installs one);
//! otherwise each test prints that it is skipped.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

use common::{path_str, repo};
use serde_json::Value;

/// The tests share the repository's `.snakemake/` state directory and the two cores: one
/// workflow at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn snakemake_bin() -> Option<String> {
    match std::env::var("INTERVENE_SNAKEMAKE") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            eprintln!(
                "skipped: set INTERVENE_SNAKEMAKE to a snakemake executable (snakemake==9.27.1) to run the workflow"
            );
            None
        }
    }
}

fn snakemake(bin: &str, config: &str, out: &Path, targets: &[String]) -> (bool, String) {
    let o = Command::new(bin)
        .current_dir(repo())
        .args([
            "-s",
            "workflow/Snakefile",
            "--configfile",
            config,
            "--config",
            &format!("out={}", path_str(out)),
            &format!("intervene={}", env!("CARGO_BIN_EXE_intervene")),
            "-j",
            "2",
        ])
        .args(targets)
        .output()
        .expect("spawn snakemake");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn score(out: &Path, pair: &str) -> Value {
    let p = out.join(format!("scores/{pair}.json"));
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// Every row holds both orders' scores; bounded criteria hold E_OF and E_OS in [0, 1] that
/// follow from them.
fn check_rows(pair: &str, s: &Value) -> Vec<String> {
    let rows = s["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{pair}: no criterion scored\n{s}");
    let mut kinds = Vec::new();
    for r in rows {
        let ab = r["s_ab"].as_f64().unwrap_or_else(|| panic!("{pair}: {r}"));
        let ba = r["s_ba"].as_f64().unwrap_or_else(|| panic!("{pair}: {r}"));
        assert!(ab.is_finite() && ba.is_finite(), "{pair}: {r}");
        let kind = r["criterion"]["kind"].as_str().unwrap().to_string();
        if kind != "perplexity" {
            let (of, os) = (r["e_of"].as_f64().unwrap(), r["e_os"].as_f64().unwrap());
            assert!(
                (0.0..=1.0).contains(&of) && (0.0..=1.0).contains(&os),
                "{r}"
            );
            assert!((os - (ab - ba).abs()).abs() < 1e-9, "{pair}: E_OS {r}");
        }
        kinds.push(kind);
    }
    kinds
}

#[test]
fn tiny_grid_resumes_scores_and_rebuilds_one_cell() {
    let Some(bin) = snakemake_bin() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = "workflow/config/tiny.yaml";
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");

    // An interrupted sweep: one lineage finished, nothing scored.
    let kept = out.join("cells/rtn-4__magnitude-0.5/provenance.json");
    let target = path_str(&out.join("cells/rtn-4__magnitude-0.5")).to_string();
    let (ok, log) = snakemake(&bin, config, &out, &[target]);
    assert!(ok, "{log}");
    assert!(kept.is_file() && !out.join("scores").exists(), "{log}");
    let (kept_t, base_t, first_t) = (
        mtime(&kept),
        mtime(&out.join("base/provenance.json")),
        mtime(&out.join("cells/rtn-4/provenance.json")),
    );

    // The full sweep resumes: the finished cells are not rebuilt.
    let (ok, log) = snakemake(&bin, config, &out, &[]);
    assert!(ok, "{log}");
    assert_eq!(mtime(&kept), kept_t, "a finished cell was rebuilt\n{log}");
    assert_eq!(mtime(&out.join("base/provenance.json")), base_t, "{log}");
    assert_eq!(mtime(&out.join("cells/rtn-4/provenance.json")), first_t);
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(md.contains("4 compositions scored from 8 lineages"), "{md}");
    for pair in [
        "magnitude-0.25__rtn-4",
        "magnitude-0.25__rtn-8",
        "magnitude-0.5__rtn-4",
        "magnitude-0.5__rtn-8",
    ] {
        let s = score(&out, pair);
        assert_eq!(
            check_rows(pair, &s),
            ["utility", "perplexity"],
            "{pair}: {s}"
        );
    }

    // Nothing to do the second time: no output is touched after its job finished.
    let (ok, log) = snakemake(&bin, config, &out, &[]);
    assert!(ok && log.contains("Nothing to be done"), "{log}");

    // A deleted cell is rebuilt from its finished first step, then its score and the report.
    let rebuilt = out.join("cells/rtn-8__magnitude-0.5");
    std::fs::remove_dir_all(&rebuilt).unwrap();
    let score_t = mtime(&out.join("scores/magnitude-0.5__rtn-8.json"));
    let (ok, log) = snakemake(&bin, config, &out, &[]);
    assert!(ok, "{log}");
    assert!(rebuilt.join("provenance.json").is_file(), "{log}");
    assert_eq!(mtime(&kept), kept_t, "a finished cell was rebuilt\n{log}");
    assert!(
        log.contains("rule second") && !log.contains("rule first") && !log.contains("rule base"),
        "{log}"
    );
    assert!(mtime(&out.join("scores/magnitude-0.5__rtn-8.json")) > score_t);
    let (ok, log) = snakemake(&bin, config, &out, &[]);
    assert!(ok && log.contains("Nothing to be done"), "{log}");
}

#[test]
fn mixed_grid_scores_and_reports_edit_unlearn_and_compress_together() {
    let Some(bin) = snakemake_bin() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let (ok, log) = snakemake(&bin, "workflow/config/tiny_mixed.yaml", &out, &[]);
    assert!(ok, "{log}");

    let compressors = ["magnitude-0.25", "magnitude-0.5", "rtn-4", "rtn-8"];
    // Pairs are named in sorted order, as the Snakefile forms them.
    let mut pairs = vec![("memit", "rmu")];
    for c in compressors {
        pairs.push((c, "memit"));
        pairs.push((c, "rmu"));
    }
    for (a, b) in pairs {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        let pair = format!("{a}__{b}");
        let s = score(&out, &pair);
        let kinds = check_rows(&pair, &s);
        // Every criterion is evaluated on every checkpoint, so each pair shows them all.
        for k in ["edit_success", "forget", "utility", "perplexity"] {
            assert!(kinds.iter().any(|x| x == k), "{pair}: no {k} in {kinds:?}");
        }
        let cats = [s["a"]["category"].as_str(), s["b"]["category"].as_str()];
        assert!(cats[0] != cats[1], "{pair}: {cats:?}");
    }
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(
        md.contains("9 compositions scored from 18 lineages"),
        "{md}"
    );
    for (x, y) in [
        ("edit", "unlearn"),
        ("edit", "compress"),
        ("unlearn", "compress"),
    ] {
        assert!(
            md.contains(&format!("## {x} × {y}")) || md.contains(&format!("## {y} × {x}")),
            "no {x} × {y} table in\n{md}"
        );
    }
    let svgs = std::fs::read_dir(out.join("report"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().starts_with("heat_")
        })
        .count();
    assert!(svgs >= 3, "{svgs} heat maps\n{md}");
}
