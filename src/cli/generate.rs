//! `intervene generate DIR --prompt TEXT`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::checkpoint::{Checkpoint, TOKENIZER_FILE};
use intervene::model::Llama;
use intervene::tokenizer::Tokenizer;
use serde_json::json;

use super::common::{print_json, Backend, GlobalOpts};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint directory.
    pub dir: PathBuf,
    /// The prompt text (encoded with the checkpoint's tokenizer and its special-token rules).
    #[arg(long)]
    pub prompt: String,
    /// The most new tokens to generate; generation also stops at the end-of-sequence token.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Print prompt and output token ids and text as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: GenerateArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let ckpt = Checkpoint::open(&a.dir)?;
    let tokenizer = Tokenizer::from_file(a.dir.join(TOKENIZER_FILE))?;
    let prompt_ids = tokenizer.encode(&a.prompt, true)?;
    if prompt_ids.is_empty() {
        return Err(intervene::Error::usage("--prompt", "encodes to no tokens").into());
    }
    let model = Llama::load(&ckpt)?;
    let stop: Vec<u32> = ckpt.config.eos_token_id.into_iter().collect();
    let backend = g.backend()?;
    let start = std::time::Instant::now();
    let ids = match &backend {
        Backend::Cpu => model.generate_greedy(&prompt_ids, a.max_tokens, &stop)?,
        #[cfg(feature = "gpu")]
        Backend::Gpu(gpu) => intervene::model::GpuLlama::upload(gpu, &model)?.generate_greedy(
            &prompt_ids,
            a.max_tokens,
            &stop,
        )?,
    };
    let seconds = start.elapsed().as_secs_f64();
    let text = tokenizer.decode(&ids, true)?;
    if a.json {
        print_json(&json!({
            "id": ckpt.provenance.as_ref().map(|p| p.id.clone()),
            "prompt": a.prompt,
            "prompt_ids": prompt_ids,
            "ids": ids,
            "text": text,
            "seconds": seconds,
            "device": backend.name(),
        }))?;
    } else {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}
