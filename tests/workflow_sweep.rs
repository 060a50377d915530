//! The Snakemake composition workflow (workflow/Snakefile) on the tiny fixture's 2x2 grid
//! (magnitude 0.25/0.5 x rtn 4/8-bit, both orders): every cell built, evaluated and scored,
//! the report written; a second run does nothing; a deleted cell is rebuilt alone.
//! Runs when INTERVENE_SNAKEMAKE names a snakemake executable (.ci/run installs one);
//! otherwise it says it is skipped.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use common::{path_str, repo};

fn snakemake(bin: &str, out: &Path) -> (bool, String) {
    let o = Command::new(bin)
        .current_dir(repo())
        .args([
            "-s",
            "workflow/Snakefile",
            "--configfile",
            "workflow/config/tiny.yaml",
            "--config",
            &format!("out={}", path_str(out)),
            &format!("intervene={}", env!("CARGO_BIN_EXE_intervene")),
            "-j",
            "2",
        ])
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

#[test]
fn tiny_grid_runs_resumes_and_rebuilds_one_cell() {
    let Ok(bin) = std::env::var("INTERVENE_SNAKEMAKE") else {
        eprintln!("skipped: set INTERVENE_SNAKEMAKE to a snakemake executable to run the workflow");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let (ok, log) = snakemake(&bin, &out);
    assert!(ok, "{log}");
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(md.contains("4 compositions scored from 8 lineages"), "{md}");
    for pair in [
        "magnitude-0.25__rtn-4",
        "magnitude-0.25__rtn-8",
        "magnitude-0.5__rtn-4",
        "magnitude-0.5__rtn-8",
    ] {
        let s: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("scores/{pair}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(s["rows"].as_array().unwrap().len(), 2, "{pair}: {s}");
    }
    // Nothing to do the second time.
    let kept = out.join("cells/rtn-4__magnitude-0.5/provenance.json");
    let before = mtime(&kept);
    let (ok, log) = snakemake(&bin, &out);
    assert!(ok && log.contains("Nothing to be done"), "{log}");
    // A deleted cell (and the outputs after it) is rebuilt; the others are kept.
    std::fs::remove_dir_all(out.join("cells/rtn-8__magnitude-0.5")).unwrap();
    let (ok, log) = snakemake(&bin, &out);
    assert!(ok, "{log}");
    assert!(out
        .join("cells/rtn-8__magnitude-0.5/provenance.json")
        .is_file());
    assert_eq!(mtime(&kept), before, "a finished cell was rebuilt\n{log}");
    assert!(
        log.contains("rule second") && !log.contains("rule first"),
        "{log}"
    );
}
