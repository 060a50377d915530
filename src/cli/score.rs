//! `intervene score DIR_AB DIR_BA | --ab DIR... --ba DIR... | DIR` and `intervene report DIR...
//! -o OUT`: composability from provenance (src/score/). Thin: arguments -> lineages -> library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::eval::record;
use intervene::score::compare::Row;
use intervene::score::report::{sweep, write_report};
use intervene::score::{score, steps, ForgetRule, Lineage, Score, Steps};
use intervene::Error;

use super::common::{print_json, GlobalOpts};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// DIR_AB DIR_BA: the final checkpoints of A then B and of B then A. One DIR: a two-step
    /// lineage, each criterion before and after its second step.
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Groups: the A-then-B lineages (edit batches, seeds); each order's scores are averaged
    /// before min and abs.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with = "dirs")]
    pub ab: Vec<PathBuf>,
    /// Groups: the B-then-A lineages, one partner per --ab lineage.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with = "dirs")]
    pub ba: Vec<PathBuf>,
    #[command(flatten)]
    pub forget: ForgetArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The unlearning's forget MC benchmark (repeatable; matched by content hash). Default:
    /// MC files whose name contains `forget` or starts with `wmdp`.
    #[arg(long, value_name = "FILE")]
    pub forget_mc: Vec<PathBuf>,
}

impl ForgetArgs {
    fn rule(&self) -> anyhow::Result<ForgetRule> {
        let mut hashes = Vec::new();
        for f in &self.forget_mc {
            if !f.exists() {
                return Err(Error::usage(
                    "--forget-mc",
                    format!("`{}` does not exist", f.display()),
                )
                .into());
            }
            hashes.push(record::data_file("forget", f)?.blake3);
        }
        Ok(ForgetRule { hashes })
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The sweep's final checkpoints (two-step lineages; others are listed as not scored).
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Output directory (report.md, scores.json, SVG figures); must not exist unless --force.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub forget: ForgetArgs,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
}

fn open(dirs: &[PathBuf]) -> anyhow::Result<Vec<Lineage>> {
    Ok(dirs
        .iter()
        .map(|d| Lineage::open(d.as_path()))
        .collect::<Result<_, _>>()?)
}

pub fn run(a: ScoreArgs, _g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let rule = a.forget.rule()?;
    if !a.ab.is_empty() || !a.ba.is_empty() {
        let s = score(&open(&a.ab)?, &open(&a.ba)?, &rule)?;
        return print_score(&s, a.json);
    }
    match a.dirs.as_slice() {
        [one] => {
            let s = steps(&Lineage::open(one)?, &rule)?;
            if a.json {
                print_json(&serde_json::to_value(&s)?)?;
            } else {
                print_steps(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        [ab, ba] => {
            let s = score(
                std::slice::from_ref(&Lineage::open(ab)?),
                std::slice::from_ref(&Lineage::open(ba)?),
                &rule,
            )?;
            print_score(&s, a.json)
        }
        _ => Err(Error::usage(
            "DIR",
            format!(
                "give DIR_AB DIR_BA, one DIR, or --ab DIR... --ba DIR... (got {} directories)",
                a.dirs.len()
            ),
        )
        .into()),
    }
}

pub fn run_report(a: ReportArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let rule = a.forget.rule()?;
    intervene::checkpoint::check_output_path(&a.output, a.force)?;
    let sw = sweep(&a.dirs, &rule)?;
    let files = write_report(&sw, &a.output, a.force)?;
    if !g.quiet {
        for s in &sw.skipped {
            eprintln!("not scored: {s}");
        }
    }
    println!(
        "{}: {} compositions from {} lineages, {} files",
        a.output.join("report.md").display(),
        sw.scores.len(),
        sw.lineages,
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn print_score(s: &Score, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&serde_json::to_value(s)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("base  {}", s.base);
    println!("A     {} ({})", s.a.label, s.a.category);
    println!("B     {} ({})", s.b.label, s.b.category);
    println!("lineages per order: {}", s.ab.len());
    let w = s
        .rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!(
        "{:<w$}  {:>9}  {:>9}  {:>7}  {:>7}  own",
        "criterion", "s(A->B)", "s(B->A)", "E_OF", "E_OS"
    );
    for r in &s.rows {
        print_row(r, w);
    }
    for n in &s.notes {
        eprintln!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(r: &Row, w: usize) {
    println!(
        "{:<w$}  {:>9.4}  {:>9.4}  {:>7}  {:>7}  {}",
        r.label,
        r.s_ab,
        r.s_ba,
        num(r.e_of),
        num(r.e_os),
        r.own.join(", ")
    );
}

fn print_steps(s: &Steps) {
    println!("base          {}", s.base);
    println!(
        "A             {} ({}) -> {}",
        s.a.label, s.a.category, s.intermediate
    );
    println!(
        "B             {} ({}) -> {}",
        s.b.label, s.b.category, s.output
    );
    let w = s
        .rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!(
        "{:<w$}  {:>9}  {:>9}  {:>9}  {:>9}  own",
        "criterion", "base", "after A", "after B", "B's delta"
    );
    for r in &s.rows {
        println!(
            "{:<w$}  {:>9}  {:>9.4}  {:>9.4}  {:>+9.4}  {}",
            r.label,
            num(r.base),
            r.after_a,
            r.after_b,
            r.delta,
            r.own.join(", ")
        );
    }
}
