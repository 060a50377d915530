//! One unlearning step end to end: open the checkpoint, check the output path, read and
//! tokenise the corpora, resolve the defaults that depend on the model, run the method, and
//! write the changed tensors with their step record (every setting, every corpus's hash, the
//! loss curve). Input errors all surface before the first optimiser step.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::corpus::TokenCorpus;
use super::ga::{gradient_ascent, upper_half};
use super::gd::{gradient_difference, GdSettings};
use super::rmu::{median_token_norm, random_directions, rmu, RmuSettings};
use super::Outcome;
use crate::checkpoint::{check_output_path, Checkpoint, TOKENIZER_FILE};
use crate::error::{Error, Result};
use crate::interventions::write_changed::{write_changed, StepRecord, WriteOutcome};
use crate::model::names::Proj;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// The method and its own settings; `None` means the model-dependent default.
#[derive(Clone, Debug, PartialEq)]
pub enum MethodPlan {
    Ga {
        layers: Option<Range<usize>>,
    },
    Gd {
        layers: Option<Range<usize>>,
        retain_weight: f32,
    },
    Rmu {
        layer: Option<usize>,
        update_layers: Option<Range<usize>>,
        module: Proj,
        /// Explicit coefficients (one, or one per forget file).
        steering_coef: Option<Vec<f32>>,
        /// Default coefficient: this multiple of the median token norm at the layer.
        steering_scale: f32,
        /// One, or one per forget file.
        alpha: Vec<f32>,
        /// Positions at the start of every document left out of both MSEs.
        skip_first: usize,
    },
}

impl MethodPlan {
    pub fn name(&self) -> &'static str {
        match self {
            MethodPlan::Ga { .. } => "ga",
            MethodPlan::Gd { .. } => "gd",
            MethodPlan::Rmu { .. } => "rmu",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct UnlearnPlan {
    pub method: MethodPlan,
    pub forget: Vec<PathBuf>,
    pub retain: Vec<PathBuf>,
    /// Tokens kept of each document (right truncation).
    pub max_len: usize,
    pub batch_size: usize,
    /// `None`: one pass over the forget batches (every forget file's batches, alternating).
    pub steps: Option<usize>,
    pub lr: f32,
    pub seed: u64,
}

/// RMU's reference layer 7 of Zephyr's 32, at the same relative depth (rounded).
pub fn default_rmu_layer(n_layers: usize) -> usize {
    ((7 * n_layers + 16) / 32).min(n_layers.saturating_sub(1))
}

/// `l-2..=l`, clamped at layer 0.
pub fn default_update_layers(layer: usize) -> Range<usize> {
    layer.saturating_sub(2)..layer + 1
}

/// One value for every forget file, or one per file.
fn per_file(flag: &str, v: &[f32], n: usize) -> Result<Vec<f32>> {
    match v.len() {
        1 => Ok(vec![v[0]; n]),
        k if k == n => Ok(v.to_vec()),
        k => Err(Error::usage(
            flag,
            format!("{k} values for {n} forget file(s): give one, or one per file"),
        )),
    }
}

/// Runs `plan` on checkpoint `input` and writes the result to `output`. `progress` sees each
/// step's record.
pub fn unlearn_checkpoint(
    input: &Path,
    output: &Path,
    force: bool,
    plan: &UnlearnPlan,
    device: &str,
    progress: impl FnMut(&Value),
) -> Result<(WriteOutcome, Value)> {
    let start = Instant::now();
    check_output_path(output, force)?;
    let ckpt = Checkpoint::open(input)?;
    let tok = Tokenizer::from_file(input.join(TOKENIZER_FILE))?;
    let is_rmu = matches!(plan.method, MethodPlan::Rmu { .. });
    if plan.forget.is_empty() {
        return Err(Error::usage(
            "--forget",
            "at least one forget file is needed",
        ));
    }
    if plan.retain.is_empty() && !matches!(plan.method, MethodPlan::Ga { .. }) {
        return Err(Error::usage(
            "--retain",
            format!("{} needs at least one retain file", plan.method.name()),
        ));
    }
    if plan.max_len < 2 {
        return Err(Error::usage("--max-len", "must be at least 2"));
    }
    // A next-token loss needs 2 tokens; RMU's hidden-state loss needs 1.
    let min_tokens = if is_rmu { 1 } else { 2 };
    let load = |role: &str, files: &[PathBuf]| -> Result<Vec<TokenCorpus>> {
        files
            .iter()
            .map(|p| TokenCorpus::load(role, p, &tok, plan.max_len, min_tokens))
            .collect()
    };
    let forget = load("--forget", &plan.forget)?;
    let retain = load("--retain", &plan.retain)?;
    let mut model = Llama::load(&ckpt)?;
    let n_layers = model.config().num_hidden_layers;
    let bs = plan.batch_size.max(1);
    let steps = plan.steps.unwrap_or_else(|| {
        forget.len() * forget.iter().map(|c| c.n_batches(bs)).min().unwrap_or(1)
    });

    let mut report = json!({});
    let (params, outcome): (Value, Outcome) = match &plan.method {
        MethodPlan::Ga { layers } | MethodPlan::Gd { layers, .. } => {
            let retain_weight = match plan.method {
                MethodPlan::Gd { retain_weight, .. } => {
                    if !retain_weight.is_finite() || retain_weight < 0.0 {
                        return Err(Error::usage(
                            "--retain-weight",
                            format!("{retain_weight} must be finite and non-negative"),
                        ));
                    }
                    Some(retain_weight)
                }
                _ => None,
            };
            let s = GdSettings {
                layers: layers.clone().unwrap_or_else(|| upper_half(n_layers)),
                retain_weight,
                lr: plan.lr,
                steps,
                batch_size: bs,
            };
            let out = match retain_weight {
                None => gradient_ascent(&mut model, &forget, &s, progress)?,
                Some(_) => gradient_difference(&mut model, &forget, &retain, &s, progress)?,
            };
            (s.to_json(), out)
        }
        MethodPlan::Rmu {
            layer,
            update_layers,
            module,
            steering_coef,
            steering_scale,
            alpha,
            skip_first,
        } => {
            let layer = layer.unwrap_or_else(|| default_rmu_layer(n_layers));
            if layer >= n_layers {
                return Err(Error::usage(
                    "--layer",
                    format!("{layer} is out of range (the model has {n_layers} layers)"),
                ));
            }
            let k = forget.len();
            let coef = match steering_coef {
                Some(c) => per_file("--steering-coef", c, k)?,
                None => {
                    if !(steering_scale.is_finite() && *steering_scale > 0.0) {
                        return Err(Error::usage("--steering-scale", "must be positive"));
                    }
                    let mut v = Vec::with_capacity(k);
                    let mut norms = Vec::with_capacity(k);
                    for c in &forget {
                        let m = median_token_norm(&model, layer, c.batch(0, bs))?;
                        norms.push(m);
                        v.push(steering_scale * m);
                    }
                    report["median_token_norm"] = json!(norms);
                    v
                }
            };
            let s = RmuSettings {
                layer,
                update_layers: update_layers
                    .clone()
                    .unwrap_or_else(|| default_update_layers(layer)),
                module: *module,
                steering_coef: coef,
                alpha: per_file("--alpha", alpha, k)?,
                lr: plan.lr,
                steps,
                batch_size: bs,
                skip_first: *skip_first,
            };
            s.validate(&model, k)?;
            let dirs = random_directions(plan.seed, k, model.config().hidden_size);
            let out = rmu(&mut model, &forget, &retain, &dirs, &s, progress)?;
            let mut p = s.to_json();
            p["steering_scale"] = match steering_coef {
                Some(_) => Value::Null,
                None => json!(steering_scale),
            };
            p["direction"] = json!("uniform [0,1) per hidden unit (SplitMix64, seed), unit L2 norm, one per forget file");
            (p, out)
        }
    };

    let mut params = params;
    params["max_len"] = json!(plan.max_len);
    params["seed"] = json!(plan.seed);
    params["forget_files"] = json!(plan.forget.len());
    params["retain_files"] = json!(plan.retain.len());
    let corpus_info = |c: &TokenCorpus| json!({"path": c.path.display().to_string(), "documents": c.docs.len(), "tokens": c.tokens()});
    report["forget"] = forget.iter().map(corpus_info).collect();
    report["retain"] = retain.iter().map(corpus_info).collect();
    report["changed"] = json!(outcome.changed);
    report["curve"] = json!(outcome.curve);
    let mut inputs = Vec::new();
    for c in forget.iter().chain(&retain) {
        inputs.push(c.input_file()?);
    }
    let record = StepRecord {
        op: plan.method.name().to_string(),
        category: "unlearn".to_string(),
        params,
        inputs,
        report: report.clone(),
    };
    let written = write_changed(
        &ckpt,
        output,
        force,
        &model,
        &outcome.changed,
        record,
        device,
        start,
    )?;
    Ok((written, report))
}
