//! The command line: clap derive definitions, one module per command group. Each command turns
//! its arguments into a validated plan and calls the library; this file maps errors to exit
//! codes (DESIGN.md: 0 success, 1 a check failed, 2 usage or input error).

mod common;
mod compress;
mod eval;
mod export;
mod generate;
mod import;
mod inspect;
mod verify;

use std::process::ExitCode;

use clap::Parser;
use intervene::interventions::compress::plan::Method;

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
    eprintln!("error: {e:#}");
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<intervene::Error>())
        .map(|le| le.exit_code())
        .unwrap_or(2);
    ExitCode::from(code)
}
