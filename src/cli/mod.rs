//! The command line: clap derive definitions, one module per command group. Each command turns
//! its arguments into a validated plan and calls the library; this file maps errors to exit
//! codes (DESIGN.md: 0 success, 1 a check failed, 2 usage or input error).

mod common;
mod completions;
mod compress;
mod eval;
mod export;
mod finetune;
mod generate;
mod import;
mod inspect;
mod rome;
mod score;
mod unlearn;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use intervene::interventions::compress::plan::Method;
use intervene::interventions::edit::driver::EditMethod;

pub use common::GlobalOpts;

#[derive(Parser, Debug)]
#[command(
    name = "intervene",
    version,
    about = "Apply interventions (edits, unlearning, compression) to language-model checkpoints, with content-hashed provenance",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Import a GGUF file, a Hugging Face model directory, or a .safetensors file (with
    /// config.json beside it) into a checkpoint directory.
    Import(import::ImportArgs),
    /// Generate a continuation of a prompt (greedy decoding).
    Generate(generate::GenerateArgs),
    /// Show a checkpoint's config, tensors, id, provenance chain and evaluations.
    Inspect(inspect::InspectArgs),
    /// Recompute a checkpoint's id from its weights and check its provenance chain; exit 1 on
    /// any mismatch.
    Verify(verify::VerifyArgs),
    /// Round-to-nearest quantisation per group (no calibration).
    Rtn(compress::CompressArgs),
    /// GPTQ quantisation (calibrated, layer by layer).
    Gptq(compress::CompressArgs),
    /// AWQ: activation-aware scaling and clipping, then quantisation (calibrated).
    Awq(compress::CompressArgs),
    /// Magnitude pruning (no calibration).
    Magnitude(compress::CompressArgs),
    /// Wanda pruning: |weight| x input norm (calibrated).
    Wanda(compress::CompressArgs),
    /// SparseGPT pruning with OBS weight updates (calibrated).
    Sparsegpt(compress::CompressArgs),
    /// Evaluate a checkpoint (edit success / generalisation / locality, multiple-choice
    /// accuracy, or perplexity) and record the result in its provenance.
    Eval(eval::EvalArgs),
    /// Composability of two interventions from two lineages, one per order: order-free error
    /// and order sensitivity per criterion (one DIR: each criterion before and after its
    /// second step); exit 1 when the lineages do not compose the same pair.
    Score(score::ScoreArgs),
    /// A Markdown report of a composition sweep with E_OF/E_OS tables and SVG figures.
    Report(score::ReportArgs),
    /// ROME knowledge editing: one rank-one update of an MLP down_proj per request, applied
    /// sequentially.
    Rome(rome::EditArgs),
    /// MEMIT knowledge editing: one batch update of the down_proj weights of several layers.
    Memit(rome::EditArgs),
    /// Knowledge editing by fine-tuning the MLP output projections of chosen layers on the
    /// requests' targets (Adam, optional L-inf norm constraint).
    Ft(finetune::FtArgs),
    /// Knowledge editing with LoRA adapters trained on the requests' targets, then merged.
    Lora(finetune::LoraArgs),
    /// Unlearning by gradient ascent on the forget text.
    Ga(unlearn::UnlearnArgs),
    /// Unlearning by gradient difference: ascent on forget text, descent on retain text.
    Gd(unlearn::UnlearnArgs),
    /// RMU: steer a layer's activations on forget text to a random direction, keep them on retain text.
    Rmu(unlearn::UnlearnArgs),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(completions::CompletionsArgs),
    /// Export a checkpoint to another format (gguf).
    Export(export::ExportArgs),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = cli.global.apply().and_then(|()| match cli.command {
        Command::Import(a) => import::run(a, &cli.global),
        Command::Generate(a) => generate::run(a, &cli.global),
        Command::Inspect(a) => inspect::run(a, &cli.global),
        Command::Verify(a) => verify::run(a, &cli.global),
        Command::Rtn(a) => compress::run(Method::Rtn, a, &cli.global),
        Command::Gptq(a) => compress::run(Method::Gptq, a, &cli.global),
        Command::Awq(a) => compress::run(Method::Awq, a, &cli.global),
        Command::Magnitude(a) => compress::run(Method::Magnitude, a, &cli.global),
        Command::Wanda(a) => compress::run(Method::Wanda, a, &cli.global),
        Command::Sparsegpt(a) => compress::run(Method::Sparsegpt, a, &cli.global),
        Command::Eval(a) => eval::run(a, &cli.global),
        Command::Score(a) => score::run(a, &cli.global),
        Command::Report(a) => score::run_report(a, &cli.global),
        Command::Rome(a) => rome::run(EditMethod::Rome, a, &cli.global),
        Command::Memit(a) => rome::run(EditMethod::Memit, a, &cli.global),
        Command::Ft(a) => finetune::run_ft_cmd(a, &cli.global),
        Command::Lora(a) => finetune::run_lora_cmd(a, &cli.global),
        Command::Ga(a) => unlearn::run(unlearn::Method::Ga, a, &cli.global),
        Command::Gd(a) => unlearn::run(unlearn::Method::Gd, a, &cli.global),
        Command::Rmu(a) => unlearn::run(unlearn::Method::Rmu, a, &cli.global),
        Command::Completions(a) => completions::run(a, Cli::command()),
        Command::Export(a) => export::run(a, &cli.global),
    });
    match result {
        Ok(code) => code,
        Err(e) => report(e),
    }
}

fn report(e: anyhow::Error) -> ExitCode {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    // The chain, each cause once: a library error that already quotes its source (an I/O
    // error's OS message) would otherwise print it twice.
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    eprintln!("error: {msg}");
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<intervene::Error>())
        .map(|le| le.exit_code())
        .unwrap_or(2);
    ExitCode::from(code)
}
