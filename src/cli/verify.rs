//! `intervene verify DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::checkpoint::{verify_with, VerifyOptions};

use super::common::{print_json, GlobalOpts};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Checkpoint directory.
    pub dir: PathBuf,
    /// Do not re-hash the input files named in the provenance chain (by default each one
    /// present at its recorded path, relative to the current directory, is re-hashed).
    #[arg(long)]
    pub no_inputs: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: VerifyArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let opts = VerifyOptions {
        check_inputs: !a.no_inputs,
    };
    let report = verify_with(&a.dir, &opts)?;
    if a.json {
        print_json(&serde_json::json!({
            "ok": report.ok(),
            "computed_id": report.computed_id,
            "recorded_id": report.recorded_id,
            "problems": report.problems,
            "notes": report.notes,
            "inputs_checked": report.inputs_checked,
        }))?;
    } else {
        if report.ok() {
            println!("ok {}", report.computed_id);
        }
        for p in &report.problems {
            eprintln!("mismatch: {p}");
        }
        if !g.quiet {
            for n in &report.notes {
                eprintln!("note: {n}");
            }
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
