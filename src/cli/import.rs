//! `intervene import SRC -o DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::checkpoint::import::{import, ImportPlan};
use intervene::checkpoint::DType;

use super::common::{print_json, GlobalOpts};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A GGUF file, a Hugging Face model directory, or a .safetensors file with config.json beside it.
    pub src: PathBuf,
    /// Output checkpoint directory (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Storage dtype: f32, f16 or bf16 (default: F32 for quantised GGUF, else as stored).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ImportArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let dtype = match &a.dtype {
        None => None,
        Some(s) => Some(DType::from_user(s).ok_or_else(|| {
            intervene::Error::usage("--dtype", format!("`{s}`; expected f32, f16 or bf16"))
        })?),
    };
    let plan = ImportPlan {
        source: a.src,
        output: a.output,
        dtype,
        force: a.force,
    };
    let out = import(&plan)?;
    if a.json {
        print_json(&serde_json::json!({
            "id": out.id,
            "output": out.output,
            "tensors": out.tensors,
            "dtype": out.dtype.name(),
            "seconds": out.seconds,
        }))?;
    } else {
        println!("{}", out.id);
        if !g.quiet {
            eprintln!(
                "imported {} tensors ({}) into {} in {:.2} s",
                out.tensors,
                out.dtype,
                out.output.display(),
                out.seconds
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
