//! `intervene ga|gd|rmu IN -o OUT --forget FILE [--retain FILE] [...]`: the unlearning
//! subcommands share one argument set; each refuses the flags that mean nothing to it.

use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::interventions::compress::plan::parse_layers;
use intervene::interventions::unlearn::{unlearn_checkpoint, MethodPlan, UnlearnPlan};
use intervene::model::names::Proj;
use intervene::model::LlamaConfig;
use intervene::Error;
use serde_json::Value;

use super::common::{print_json, GlobalOpts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Ga,
    Gd,
    Rmu,
}

#[derive(Args, Debug)]
pub struct UnlearnArgs {
    /// Input checkpoint directory.
    pub input: PathBuf,
    /// Output checkpoint directory (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Text to forget: plain text, JSONL with `text`, or TOFU question/answer JSONL
    /// (repeatable; several files alternate step by step, as RMU's bio and cyber corpora).
    #[arg(long, value_name = "FILE", required = true)]
    pub forget: Vec<PathBuf>,
    /// Text to keep (gd, rmu; repeatable, alternating like --forget).
    #[arg(long, value_name = "FILE")]
    pub retain: Vec<PathBuf>,
    /// Tokens kept of each document (right truncation).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Documents per batch (consecutive, packed without padding).
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Optimiser steps (default: one pass over the forget batches; more steps wrap around).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Learning rate.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f32,
    /// ga/gd: decoder layers trained, A..B (end exclusive), A..=B or A-B (default: the upper
    /// half; the final norm and an untied LM head are trained too).
    #[arg(long)]
    pub layers: Option<String>,
    /// gd: weight of the retain descent term (the study's default 40).
    #[arg(long)]
    pub retain_weight: Option<f32>,
    /// rmu: the layer whose output is steered (default: the reference's 7 of 32 at the same
    /// relative depth).
    #[arg(long)]
    pub layer: Option<usize>,
    /// rmu: layers whose module is trained (default: layer-2..=layer).
    #[arg(long)]
    pub update_layers: Option<String>,
    /// rmu: the linear module trained in each update layer (default down_proj, the
    /// reference's `param_ids=[6]`).
    #[arg(long)]
    pub module: Option<String>,
    /// rmu: steering coefficient c, one or one per forget file, comma-separated (default:
    /// --steering-scale x the median token norm at --layer on the first forget batch).
    #[arg(long, value_delimiter = ',')]
    pub steering_coef: Vec<f32>,
    /// rmu: the default steering coefficient as a multiple of the activation norm.
    #[arg(long)]
    pub steering_scale: Option<f32>,
    /// rmu: retain weight alpha, one or one per forget file, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub alpha: Vec<f32>,
    /// rmu: positions at the start of every document left out of both MSEs (default 0, as
    /// the reference). A model whose tokenizer adds no BOS (SmolLM2) has its attention sink on
    /// the first token, with a hidden state several times the others' norm that dominates
    /// both means: 1 leaves it out.
    #[arg(long)]
    pub skip_first: Option<usize>,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The default multiple of the layer's median token norm. NOT tuned yet: a first choice (the
/// adaptive-RMU idea of scaling c by the frozen activation norm); on SmolLM2 it did not remove
/// the forget facts in 32 steps (bench/RESULTS.md, issue 8).
const DEFAULT_STEERING_SCALE: f32 = 4.0;
/// Zephyr-7B's published RMU alpha.
const DEFAULT_ALPHA: f32 = 1200.0;
const DEFAULT_RETAIN_WEIGHT: f32 = 40.0;

fn refuse(method: &str, flag: &str, given: bool) -> Result<(), Error> {
    if given {
        return Err(Error::usage(flag, format!("does not apply to {method}")));
    }
    Ok(())
}

fn range(flag: &str, s: &str, n: usize) -> Result<Range<usize>, Error> {
    parse_layers(s, n).map_err(|e| match e {
        Error::Usage { msg, .. } => Error::usage(flag, msg),
        e => e,
    })
}

fn module(s: &str) -> Result<Proj, Error> {
    Proj::ALL
        .into_iter()
        .find(|p| p.module() == s || p.module().ends_with(&format!(".{s}")))
        .ok_or_else(|| {
            Error::usage(
                "--module",
                format!("`{s}`: expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"),
            )
        })
}

fn plan(
    method: Method,
    a: &UnlearnArgs,
    seed: u64,
    cfg: &LlamaConfig,
) -> anyhow::Result<UnlearnPlan> {
    let n = cfg.num_hidden_layers;
    let name = match method {
        Method::Ga => "ga",
        Method::Gd => "gd",
        Method::Rmu => "rmu",
    };
    if method != Method::Rmu {
        refuse(name, "--layer", a.layer.is_some())?;
        refuse(name, "--update-layers", a.update_layers.is_some())?;
        refuse(name, "--steering-coef", !a.steering_coef.is_empty())?;
        refuse(name, "--steering-scale", a.steering_scale.is_some())?;
        refuse(name, "--alpha", !a.alpha.is_empty())?;
        refuse(name, "--module", a.module.is_some())?;
        refuse(name, "--skip-first", a.skip_first.is_some())?;
    }
    if method != Method::Gd {
        refuse(name, "--retain-weight", a.retain_weight.is_some())?;
    }
    if method == Method::Ga {
        refuse(
            name,
            "--retain (ga uses no retain text)",
            !a.retain.is_empty(),
        )?;
    } else if a.retain.is_empty() {
        return Err(Error::usage(
            "--retain",
            format!("{name} needs a retain file: pass --retain FILE"),
        )
        .into());
    }
    let layers = match &a.layers {
        Some(s) => {
            refuse(
                name,
                "--layers (use --layer and --update-layers)",
                method == Method::Rmu,
            )?;
            Some(range("--layers", s, n)?)
        }
        None => None,
    };
    let method = match method {
        Method::Ga => MethodPlan::Ga { layers },
        Method::Gd => MethodPlan::Gd {
            layers,
            retain_weight: a.retain_weight.unwrap_or(DEFAULT_RETAIN_WEIGHT),
        },
        Method::Rmu => {
            if let Some(l) = a.layer {
                if l >= n {
                    return Err(Error::usage(
                        "--layer",
                        format!("{l} is out of range (the model has {n} layers, 0..{n})"),
                    )
                    .into());
                }
            }
            let update_layers = a
                .update_layers
                .as_deref()
                .map(|s| range("--update-layers", s, n))
                .transpose()?;
            if !a.steering_coef.is_empty() && a.steering_scale.is_some() {
                return Err(
                    Error::usage("--steering-scale", "conflicts with --steering-coef").into(),
                );
            }
            MethodPlan::Rmu {
                layer: a.layer,
                update_layers,
                module: module(a.module.as_deref().unwrap_or("down_proj"))?,
                steering_coef: (!a.steering_coef.is_empty()).then(|| a.steering_coef.clone()),
                steering_scale: a.steering_scale.unwrap_or(DEFAULT_STEERING_SCALE),
                alpha: if a.alpha.is_empty() {
                    vec![DEFAULT_ALPHA]
                } else {
                    a.alpha.clone()
                },
                skip_first: a.skip_first.unwrap_or(0),
            }
        }
    };
    Ok(UnlearnPlan {
        method,
        forget: a.forget.clone(),
        retain: a.retain.clone(),
        max_len: a.max_len,
        batch_size: a.batch_size,
        steps: a.steps,
        lr: a.lr,
        seed,
    })
}

pub fn run(method: Method, a: UnlearnArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let cfg = LlamaConfig::from_file(&a.input.join(intervene::checkpoint::CONFIG_FILE))?;
    let plan = plan(method, &a, g.seed, &cfg)?;
    let quiet = g.quiet || a.json;
    let (out, report) = unlearn_checkpoint(
        &a.input,
        &a.output,
        a.force,
        &plan,
        g.device_name(),
        |rec| {
            if !quiet {
                eprintln!("{}", step_line(rec));
            }
        },
    )?;
    if a.json {
        print_json(&serde_json::json!({
            "id": out.id,
            "output": out.output,
            "seconds": out.seconds,
            "report": report,
        }))?;
    } else {
        println!("{}", out.id);
        if !g.quiet {
            eprintln!(
                "{} -> {} in {:.1} s: {} tensors changed",
                plan.method.name(),
                out.output.display(),
                out.seconds,
                report["changed"].as_array().map_or(0, Vec::len)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `step 3: loss 1.23 (forget_nll 4.5, retain_nll 2.1)`.
fn step_line(rec: &Value) -> String {
    let mut s = format!(
        "step {}: loss {:.6}",
        rec["step"],
        rec["loss"].as_f64().unwrap_or(f64::NAN)
    );
    for k in ["forget_nll", "retain_nll", "forget_loss", "retain_loss"] {
        if let Some(v) = rec.get(k).and_then(Value::as_f64) {
            s += &format!(", {k} {v:.6}");
        }
    }
    s
}
