//! `intervene export gguf DIR -o FILE [--type f32|f16|q8_0|q4_0]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use intervene::checkpoint::export::{export_gguf, ExportPlan, ExportType};

use super::common::{print_json, GlobalOpts};

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub format: ExportFormat,
}

#[derive(Subcommand, Debug)]
pub enum ExportFormat {
    /// Write a GGUF v3 file that llama.cpp loads (llama architecture, tokenizer, the chain
    /// under `intervene.*`).
    Gguf(GgufArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// 32-bit floats: exact.
    #[value(name = "f32")]
    F32,
    /// 16-bit floats.
    #[value(name = "f16")]
    F16,
    /// 8-bit blocks of 32 with an fp16 scale (8.5 bits per weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 with an fp16 scale (4.5 bits per weight); lossless for a
    /// `--bits 4 --sym --group-size 32` checkpoint whose scales are fp16 numbers.
    #[value(name = "q4_0")]
    Q4_0,
}

#[derive(Args, Debug)]
pub struct GgufArgs {
    /// Input checkpoint directory (read only).
    pub dir: PathBuf,
    /// Output GGUF file (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Type of the weight matrices; norms and biases stay F32, and a matrix whose rows are
    /// not a multiple of 32 is written F16 under q8_0/q4_0 (listed in the output).
    #[arg(long = "type", value_enum, default_value = "f32")]
    pub ty: TypeArg,
    /// `general.name` in the file (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Print the result, with per-tensor error statistics, as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ExportArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let ExportFormat::Gguf(a) = a.format;
    let ty = match a.ty {
        TypeArg::F32 => ExportType::F32,
        TypeArg::F16 => ExportType::F16,
        TypeArg::Q8_0 => ExportType::Q8_0,
        TypeArg::Q4_0 => ExportType::Q4_0,
    };
    let plan = ExportPlan {
        source: a.dir,
        output: a.output,
        ty,
        name: a.name,
        force: a.force,
    };
    let out = export_gguf(&plan)?;
    if a.json {
        print_json(&serde_json::to_value(&out)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", out.output.display());
    if !g.quiet {
        let (blocks, lossless) = out
            .tensors
            .iter()
            .filter(|t| t.ty != "F32")
            .fold((0, 0), |(b, l), t| (b + t.blocks, l + t.lossless_blocks));
        eprintln!(
            "exported {} ({}) as {} tensors, {} bytes, in {:.2} s; {lossless}/{blocks} blocks of \
             the non-F32 tensors decode to the stored weights exactly",
            out.id,
            out.ty,
            out.tensors.len(),
            out.bytes,
            out.seconds
        );
        for t in out.tensors.iter().filter_map(|t| t.fallback.as_ref()) {
            eprintln!("note: {t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
