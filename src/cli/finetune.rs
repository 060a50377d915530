//! `intervene ft|lora IN -o OUT --requests FILE [...]`: the optimiser-based editors. Arguments
//! become a validated plan; the requests are read and tokenised as `eval --task edit` does;
//! `interventions::edit::{ft, lora}` train; `write_changed` writes the changed tensors with the
//! step record.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use intervene::checkpoint::{Checkpoint, TOKENIZER_FILE};
use intervene::data::{read_requests, RequestFormat};
use intervene::eval::{record, Progress};
use intervene::interventions::compress::plan::parse_layers;
use intervene::interventions::edit::ft::{run_ft, FtPlan};
use intervene::interventions::edit::lora::{parse_target, run_lora, LoraPlan};
use intervene::interventions::edit::targets::{tokenize, TargetLoss};
use intervene::interventions::write_changed::{write_changed, StepRecord};
use intervene::model::{Llama, LlamaConfig};
use intervene::tokenizer::Tokenizer;
use intervene::Error;
use serde_json::{json, Value};

use super::common::{print_json, GlobalOpts};

/// Input, output and request selection, shared by `ft` and `lora`.
#[derive(Args, Debug)]
pub struct EditIo {
    /// Input checkpoint directory (with tokenizer.json).
    pub input: PathBuf,
    /// Output checkpoint directory (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Edit requests: zsRE (MEND), CounterFact (EasyEdit) or ROME requested_rewrite, JSONL or
    /// a JSON array.
    #[arg(long, value_name = "FILE")]
    pub requests: PathBuf,
    /// Requests to edit (after --offset; default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Requests to skip first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Cap on the target's token count (the edit evaluation's `max_length`).
    #[arg(long, default_value_t = 30)]
    pub max_length: usize,
    /// Requests per optimiser step (default: all selected requests in one batch).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Adam's (L2) weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FtLoss {
    /// Every target token scored at the last prompt position (FT-L, EasyEdit's default).
    PromptLast,
    /// Teacher-forced cross-entropy of the target after the prompt (FT-M, `target_new`).
    Target,
}

#[derive(Args, Debug)]
pub struct FtArgs {
    #[command(flatten)]
    pub io: EditIo,
    /// Layers whose mlp.down_proj is trained: A, A..B (end exclusive), A..=B or A-B
    /// (default: EasyEdit's Llama layer 21 of 32 scaled to the depth, round(21 n / 32)).
    #[arg(long)]
    pub layers: Option<String>,
    /// Epochs over the requests.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f32,
    #[arg(long, value_enum, default_value = "prompt-last")]
    pub loss: FtLoss,
    /// L-inf bound on each trained element's change, applied after every step.
    #[arg(long, value_name = "X")]
    pub norm_constraint: Option<f32>,
}

#[derive(Args, Debug)]
pub struct LoraArgs {
    #[command(flatten)]
    pub io: EditIo,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f32,
    /// Adapted projections, comma-separated (q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj).
    #[arg(long, default_value = "q_proj,v_proj")]
    pub targets: String,
    /// Layers with adapters: A, A..B, A..=B or A-B (default: all).
    #[arg(long)]
    pub layers: Option<String>,
    /// Epochs over the requests.
    #[arg(long, default_value_t = 70)]
    pub steps: usize,
    #[arg(long, default_value_t = 5e-3)]
    pub lr: f32,
    /// Stop once an epoch's mean target loss is below this (EasyEdit's FT criterion, 1e-2; 0
    /// runs every epoch as EasyEdit's LoRA does). The default stops before the adapters
    /// overfit the targets and wreck the rest of the model (bench/RESULTS.md).
    #[arg(long, default_value_t = 1e-2)]
    pub stop_loss: f64,
}

fn layers(
    spec: &Option<String>,
    cfg: &LlamaConfig,
    default: std::ops::Range<usize>,
) -> anyhow::Result<std::ops::Range<usize>> {
    Ok(match spec {
        Some(s) => parse_layers(s, cfg.num_hidden_layers)?,
        None => default,
    })
}

/// Everything before training: checkpoint, tokenizer, requests (format, window) and model.
struct Loaded {
    ckpt: Checkpoint,
    tok: Tokenizer,
    format: RequestFormat,
    requests: Vec<intervene::data::EditRequest>,
}

fn load(io: &EditIo) -> anyhow::Result<Loaded> {
    if io.output.exists() && !io.force {
        return Err(Error::usage(
            "--output",
            format!(
                "`{}` exists (pass --force to replace it)",
                io.output.display()
            ),
        )
        .into());
    }
    // Checked before training, so a long run does not end on an unwritable output.
    if let Some(parent) = io.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::usage(
                "--output",
                format!("parent directory `{}` does not exist", parent.display()),
            )
            .into());
        }
    }
    if io.batch_size == Some(0) {
        return Err(Error::usage("--batch-size", "must be at least 1").into());
    }
    let ckpt = Checkpoint::open(&io.input)?;
    let tok = Tokenizer::from_file(io.input.join(TOKENIZER_FILE))?;
    let (format, requests) = read_requests(&io.requests, io.offset, io.limit)?;
    Ok(Loaded {
        ckpt,
        tok,
        format,
        requests,
    })
}

/// The request selection, for the step record.
fn selection(io: &EditIo, l: &Loaded) -> Value {
    json!({
        "format": l.format.name(),
        "offset": io.offset,
        "limit": io.limit,
        "count": l.requests.len(),
        "lines": l.requests.iter().map(|r| r.line).collect::<Vec<_>>(),
        "max_length": io.max_length,
        "tokenization": "prompt: enc(prompt) with special tokens; target: enc(\" \" + target_new), bos/eos removed, cut to max_length (as eval --task edit)",
    })
}

/// Writes the edited model with its step record and prints the result.
// The run's inputs, the trained model and its record: one call site per editor.
#[allow(clippy::too_many_arguments)]
fn finish(
    op: &str,
    io: &EditIo,
    l: &Loaded,
    model: &Llama,
    changed: &[String],
    params: Value,
    report: Value,
    g: &GlobalOpts,
    start: Instant,
) -> anyhow::Result<ExitCode> {
    let record = StepRecord {
        op: op.to_string(),
        category: "edit".to_string(),
        params,
        inputs: vec![record::data_file("requests", &io.requests)?],
        report: report.clone(),
    };
    let out = write_changed(
        &l.ckpt,
        &io.output,
        io.force,
        model,
        changed,
        record,
        g.device_name(),
        start,
    )?;
    if io.json {
        print_json(&json!({
            "id": out.id,
            "output": out.output,
            "seconds": out.seconds,
            "report": report,
        }))?;
    } else {
        println!("{}", out.id);
        if !g.quiet {
            eprintln!(
                "{op} -> {} in {:.1} s: {} requests, {} tensors changed, loss {:.4} -> {:.4}",
                out.output.display(),
                out.seconds,
                l.requests.len(),
                changed.len(),
                report["initial_loss"].as_f64().unwrap_or(f64::NAN),
                report["final_loss"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_ft_cmd(a: FtArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let cfg = LlamaConfig::from_file(&a.io.input.join(intervene::checkpoint::CONFIG_FILE))?;
    let l0 = FtPlan::default_layer(cfg.num_hidden_layers);
    let plan = FtPlan {
        layers: layers(&a.layers, &cfg, l0..l0 + 1)?,
        steps: a.steps,
        lr: a.lr,
        weight_decay: a.io.weight_decay,
        loss: match a.loss {
            FtLoss::PromptLast => TargetLoss::PromptLast,
            FtLoss::Target => TargetLoss::PerExampleMean,
        },
        norm_constraint: a.norm_constraint,
        batch_size: a.io.batch_size.unwrap_or(0),
    };
    plan.validate(&cfg)?;
    let l = load(&a.io)?;
    let mut model = Llama::load(&l.ckpt)?;
    let examples = tokenize(&l.tok, &model, &l.requests, a.io.max_length, &a.io.requests)?;
    let progress = Progress::new(plan.steps, "ft epochs", g.quiet);
    let out = run_ft(&mut model, &examples, &plan, &progress)?;
    let mut params = plan.params();
    params["requests"] = selection(&a.io, &l);
    finish(
        "ft",
        &a.io,
        &l,
        &model,
        &out.changed,
        params,
        out.report(),
        g,
        start,
    )
}

pub fn run_lora_cmd(a: LoraArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let cfg = LlamaConfig::from_file(&a.io.input.join(intervene::checkpoint::CONFIG_FILE))?;
    let targets = a
        .targets
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse_target)
        .collect::<Result<Vec<_>, _>>()?;
    let plan = LoraPlan {
        rank: a.rank,
        alpha: a.alpha,
        targets,
        layers: layers(&a.layers, &cfg, 0..cfg.num_hidden_layers)?,
        steps: a.steps,
        lr: a.lr,
        weight_decay: a.io.weight_decay,
        seed: g.seed,
        batch_size: a.io.batch_size.unwrap_or(0),
        stop_loss: (a.stop_loss != 0.0).then_some(a.stop_loss),
    };
    plan.validate(&cfg)?;
    let l = load(&a.io)?;
    let mut model = Llama::load(&l.ckpt)?;
    let examples = tokenize(&l.tok, &model, &l.requests, a.io.max_length, &a.io.requests)?;
    let progress = Progress::new(plan.steps, "lora epochs", g.quiet);
    let out = run_lora(&mut model, &examples, &plan, &progress)?;
    let mut params = plan.params();
    params["requests"] = selection(&a.io, &l);
    finish(
        "lora",
        &a.io,
        &l,
        &model,
        &out.changed,
        params,
        out.report(),
        g,
        start,
    )
}
