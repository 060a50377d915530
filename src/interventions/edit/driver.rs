//! Checkpoint in, checkpoint out: reads the requests, builds the templates and statistics,
//! runs ROME (sequentially) or MEMIT (one batch), and writes the changed `down_proj` weights
//! with the step record (`write_changed`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use crate::checkpoint::{check_output_path, hash_file, Checkpoint, InputFile, TOKENIZER_FILE};
use crate::data::read_requests;
use crate::error::{Error, Result};
use crate::interventions::write_changed::{write_changed, StepRecord, WriteOutcome};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

use super::covariance::{layer_stats, Covariance, StatsSpec};
use super::key::down_proj;
use super::memit::{memit, MemitParams};
use super::prompts::PreparedRequest;
use super::rome::{rome_request, CovSolver, RomeParams};
use super::templates::{Templates, MEMIT_GROUPS, ROME_GROUPS};
use super::value::ValueParams;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EditMethod {
    Rome,
    Memit,
}

impl EditMethod {
    pub fn name(self) -> &'static str {
        match self {
            EditMethod::Rome => "rome",
            EditMethod::Memit => "memit",
        }
    }
}

/// Where the context templates come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSource {
    /// Sampled from the model (the method's reference groups), seeded.
    Generated { seed: u64 },
    /// Given verbatim (groups; the first must be `["{}"]`).
    Fixed(Vec<Vec<String>>),
}

/// A validated editing run.
#[derive(Clone, Debug, Serialize)]
pub struct EditPlan {
    pub method: EditMethod,
    pub requests: PathBuf,
    pub offset: usize,
    pub limit: Option<usize>,
    /// ROME: one layer; MEMIT: increasing layers.
    pub layers: Vec<usize>,
    pub value: ValueParams,
    /// ROME only: `u = C⁻¹ k̄` (true) or `u = k̄`.
    pub mom2_adjustment: bool,
    /// MEMIT only: `mom2_update_weight`.
    pub lambda: f64,
    pub stats: StatsSpec,
    pub templates: TemplateSource,
}

/// The reference's Llama layer (EasyEdit ROME `layers: [5]` of 32) scaled to `n_layers`.
pub fn default_rome_layer(n_layers: usize) -> usize {
    scale(5, n_layers)
}

/// The reference's Llama layers (EasyEdit MEMIT `4..=8` of 32) scaled to `n_layers`.
pub fn default_memit_layers(n_layers: usize) -> Vec<usize> {
    let (a, b) = (scale(4, n_layers), scale(8, n_layers));
    (a..=b.max(a)).collect()
}

/// EasyEdit's Llama-2-7B `mom2_update_weight` and the MLP width it was set for.
pub const REFERENCE_LAMBDA: f64 = 15000.0;
pub const REFERENCE_D_FF: usize = 11008;

/// MEMIT's λ scaled to the model's MLP width: `15000 · d_ff / 11008`.
///
/// Why: with `C = E[k kᵀ]` normalised per token, a key from the statistic's distribution has
/// `E[kᵀ C⁻¹ k] = d_ff`, and one layer's solve writes the share `s / (λ + s)` of its residual
/// target at a key with `s = kᵀ C⁻¹ k` (Sherman–Morrison). Keeping λ / d_ff at the
/// reference's ratio keeps that share; the unscaled 15000 on SmolLM2 (d_ff 1536) wrote about
/// a sixth of layer 4's share (bench/RESULTS.md, "Editing: ROME/MEMIT").
pub fn default_memit_lambda(d_ff: usize) -> f64 {
    REFERENCE_LAMBDA * d_ff as f64 / REFERENCE_D_FF as f64
}

fn scale(l: usize, n_layers: usize) -> usize {
    let s = (l as f64 * n_layers as f64 / 32.0).round() as usize;
    s.min(n_layers.saturating_sub(1))
}

impl EditPlan {
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        let flag = match self.method {
            EditMethod::Rome => "--layer",
            EditMethod::Memit => "--layers",
        };
        if self.layers.is_empty() {
            return Err(Error::usage(flag, "no layer"));
        }
        if let Some(&l) = self.layers.iter().find(|&&l| l >= n_layers) {
            return Err(Error::usage(
                flag,
                format!("layer {l} out of range (the model has {n_layers} layers, 0..{n_layers})"),
            ));
        }
        if self.layers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::usage(flag, "layers must be increasing"));
        }
        if self.method == EditMethod::Rome && self.layers.len() != 1 {
            return Err(Error::usage(flag, "ROME edits one layer"));
        }
        let v = &self.value;
        if v.steps == 0 {
            return Err(Error::usage("--steps", "must be at least 1"));
        }
        for (flag, x) in [
            ("--lr", v.lr),
            ("--clamp", v.clamp_norm_factor),
            ("--weight-decay", v.weight_decay),
            ("--kl-factor", v.kl_factor),
        ] {
            if !x.is_finite() || x < 0.0 || (flag == "--lr" || flag == "--clamp") && x == 0.0 {
                return Err(Error::usage(flag, format!("{x} is not a usable value")));
            }
        }
        if self.method == EditMethod::Memit && !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(Error::usage("--lambda", "must be positive"));
        }
        Ok(())
    }

    fn uses_stats(&self) -> bool {
        self.method == EditMethod::Memit || self.mom2_adjustment
    }
}

/// What an edit run produced.
#[derive(Clone, Debug)]
pub struct EditOutcome {
    pub write: WriteOutcome,
    pub report: Value,
}

/// Runs `plan` on the checkpoint `input`, writing `output`.
pub fn edit_checkpoint(
    input: &Path,
    output: &Path,
    force: bool,
    plan: &EditPlan,
    device: &str,
) -> Result<EditOutcome> {
    let start = Instant::now();
    check_output_path(output, force)?;
    let ckpt = Checkpoint::open(input)?;
    plan.validate(ckpt.config.num_hidden_layers)?;
    let tok = Tokenizer::from_file(ckpt.dir().join(TOKENIZER_FILE))?;
    let (_, requests) = read_requests(&plan.requests, plan.offset, plan.limit)?;
    if requests.is_empty() {
        return Err(Error::usage(
            "--offset/--limit",
            format!(
                "select no request of {} (offset {})",
                plan.requests.display(),
                plan.offset
            ),
        ));
    }
    let prepared = requests
        .iter()
        .map(|r| PreparedRequest::new(&tok, r))
        .collect::<Result<Vec<_>>>()?;
    let mut model = Llama::load(&ckpt)?;
    let templates = match &plan.templates {
        TemplateSource::Fixed(g) => Templates::fixed(g.clone())?,
        TemplateSource::Generated { seed } => {
            let groups: &[(usize, usize)] = match plan.method {
                EditMethod::Rome => &ROME_GROUPS,
                EditMethod::Memit => &MEMIT_GROUPS,
            };
            Templates::generate(&model, &tok, groups, *seed)?
        }
    };

    let mut inputs = vec![InputFile {
        role: "requests".into(),
        path: plan.requests.display().to_string(),
        blake3: hash_file(&plan.requests)?,
    }];
    let covs: Vec<Covariance> = if plan.uses_stats() {
        let model_id = match &ckpt.provenance {
            Some(p) => p.id.clone(),
            None => ckpt.compute_id(),
        };
        inputs.push(InputFile {
            role: "stats_corpus".into(),
            path: plan.stats.corpus.display().to_string(),
            blake3: hash_file(&plan.stats.corpus)?,
        });
        let covs = layer_stats(&model, &model_id, &tok, &plan.layers, &plan.stats)?;
        for c in &covs {
            inputs.push(InputFile {
                role: format!("covariance layer {}", c.key.layer),
                path: c.path.display().to_string(),
                blake3: c.hash.clone(),
            });
        }
        covs
    } else {
        Vec::new()
    };
    let stats_report: Vec<Value> = covs
        .iter()
        .map(|c| {
            json!({"layer": c.key.layer, "blake3": c.hash, "tokens": c.count,
                   "reused": c.reused, "file": c.path.display().to_string()})
        })
        .collect();

    let method_report = match plan.method {
        EditMethod::Rome => {
            let hp = RomeParams {
                layer: plan.layers[0],
                mom2_adjustment: plan.mom2_adjustment,
                value: plan.value,
            };
            let solver = match covs.first() {
                Some(c) if plan.mom2_adjustment => Some(CovSolver::new(c)?),
                _ => None,
            };
            let mut per = Vec::new();
            for r in &prepared {
                per.push(rome_request(
                    &mut model,
                    &tok,
                    r,
                    &templates,
                    solver.as_ref(),
                    &hp,
                )?);
            }
            json!({ "requests": per })
        }
        EditMethod::Memit => {
            let hp = MemitParams {
                layers: plan.layers.clone(),
                lambda: plan.lambda,
                value: plan.value,
            };
            serde_json::to_value(memit(&mut model, &tok, &prepared, &templates, &covs, &hp)?)
                .map_err(|e| Error::Check(format!("report: {e}")))?
        }
    };
    let report = json!({
        "batch": {
            "offset": plan.offset,
            "count": prepared.len(),
            "lines": prepared.iter().map(|r| r.line).collect::<Vec<_>>(),
        },
        "templates": templates.groups,
        "stats": stats_report,
        "method": method_report,
    });
    let params = params_json(plan);
    let changed: Vec<String> = plan
        .layers
        .iter()
        .map(|&l| format!("{}.weight", down_proj(l)))
        .collect();
    let write = write_changed(
        &ckpt,
        output,
        force,
        &model,
        &changed,
        StepRecord {
            op: plan.method.name().into(),
            category: "edit".into(),
            params,
            inputs,
            report: report.clone(),
        },
        device,
        start,
    )?;
    Ok(EditOutcome { write, report })
}

/// Every hyperparameter, as the step record holds them (the cache directory is left out: it
/// changes where the statistic lives, not what it is).
fn params_json(plan: &EditPlan) -> Value {
    let v = &plan.value;
    let mut p = json!({
        "requests": plan.requests.display().to_string(),
        "offset": plan.offset,
        "limit": plan.limit,
        "layers": plan.layers,
        "v_num_grad_steps": v.steps,
        "v_lr": v.lr,
        "v_weight_decay": v.weight_decay,
        "clamp_norm_factor": v.clamp_norm_factor,
        "kl_factor": v.kl_factor,
        "early_stop_loss": super::value::EARLY_STOP,
        "fact_token": "subject_last",
        "templates": plan.templates,
        "template_top_k": super::templates::TOP_K,
    });
    if plan.uses_stats() {
        p["mom2"] = json!({
            "corpus": plan.stats.corpus.display().to_string(),
            "samples": plan.stats.samples,
            "seqlen": plan.stats.seqlen,
            "dtype": "f32",
        });
    }
    match plan.method {
        EditMethod::Rome => p["mom2_adjustment"] = json!(plan.mom2_adjustment),
        EditMethod::Memit => p["mom2_update_weight"] = json!(plan.lambda),
    }
    p
}

/// The statistics corpus suggested when `--stats-corpus` is missing: the WikiText-103 train
/// sample committed in this repository (Wikipedia text, as the reference's statistics are).
pub const SUGGESTED_STATS_CORPUS: &str =
    "data/calibration/wikitext103/wt103_raw_train_rows1000-1999.txt";
