//! `intervene verify DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::common::{print_json, GlobalOpts};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Checkpoint directory.
    pub dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: VerifyArgs, _g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let report = intervene::checkpoint::verify(&a.dir)?;
    if a.json {
        print_json(&serde_json::json!({
            "ok": report.ok(),
            "computed_id": report.computed_id,
            "recorded_id": report.recorded_id,
            "problems": report.problems,
        }))?;
    } else if report.ok() {
        println!("ok {}", report.computed_id);
    } else {
        for p in &report.problems {
            eprintln!("mismatch: {p}");
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
