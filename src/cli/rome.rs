//! `intervene rome|memit IN -o OUT --requests FILE [...]`: knowledge editing by rank-one
//! (ROME, sequential) or batch (MEMIT) updates of `down_proj`. Both share one argument set;
//! each refuses the flags that belong to the other.
//!
//! Defaults are EasyEdit's Llama-2-7B settings (`hparams/{ROME,MEMIT}/llama-7b.yaml`), with the
//! edited layers scaled from Llama's 32 layers to the model's depth (SmolLM2-135M, 30 layers:
//! ROME layer 5, MEMIT layers 4-8), and the covariance sample count cut from the reference's
//! 100,000 Wikipedia articles to what a CPU run can afford.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::interventions::compress::plan::parse_layers;
use intervene::interventions::edit::covariance::{default_cache_dir, StatsSpec};
use intervene::interventions::edit::driver::{
    default_memit_lambda, default_memit_layers, default_rome_layer, edit_checkpoint, EditMethod,
    EditPlan, TemplateSource, SUGGESTED_STATS_CORPUS,
};
use intervene::interventions::edit::value::ValueParams;
use intervene::model::LlamaConfig;
use intervene::Error;

use super::common::{print_json, GlobalOpts};

#[derive(Args, Debug)]
pub struct EditArgs {
    /// Input checkpoint directory (with tokenizer.json).
    pub input: PathBuf,
    /// Output checkpoint directory (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Edit requests: zsRE (MEND), CounterFact (EasyEdit) or ROME `requested_rewrite`
    /// records, JSON Lines or a JSON array (the same readers as `eval --task edit`).
    #[arg(long, value_name = "FILE")]
    pub requests: PathBuf,
    /// Skip this many records first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Edit at most this many records (default: all after --offset).
    #[arg(long)]
    pub limit: Option<usize>,
    /// ROME: the edited layer (default: EasyEdit's Llama layer 5 of 32, scaled to the model's
    /// depth: round(5 * layers / 32), 5 for SmolLM2's 30 layers).
    #[arg(long)]
    pub layer: Option<usize>,
    /// MEMIT: the edited layers, A-B, A..B (end exclusive) or A..=B (default: EasyEdit's
    /// Llama 4-8 of 32 scaled to the model's depth, 4-8 for SmolLM2's 30 layers).
    #[arg(long)]
    pub layers: Option<String>,
    /// MEMIT: mom2_update_weight λ in ΔW = R Kᵀ (λC + KKᵀ)⁻¹ (default: EasyEdit's Llama-2-7B
    /// 15000 scaled by the MLP width, 15000 · d_ff / 11008: 2093 for SmolLM2's d_ff 1536, so
    /// that each layer writes the same share of its residual as the reference's).
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Adam steps of the value optimisation (v_num_grad_steps; the last only evaluates).
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Adam learning rate of the value optimisation (v_lr).
    #[arg(long, default_value_t = 0.5)]
    pub lr: f32,
    /// v_weight_decay: weight of ‖δ‖ / ‖target_init‖² in the loss.
    #[arg(long, default_value_t = 1e-3)]
    pub weight_decay: f32,
    /// clamp_norm_factor: ‖δ‖ is kept at most this times ‖target_init‖.
    #[arg(long, default_value_t = 4.0)]
    pub clamp: f32,
    /// kl_factor: weight of the KL essence term on "{subject} is a".
    #[arg(long, default_value_t = 0.0625)]
    pub kl_factor: f32,
    /// ROME: use u = k̄ instead of C⁻¹k̄ (EasyEdit's Llama setting; the original ROME and the
    /// default here use the covariance).
    #[arg(long)]
    pub no_mom2_adjustment: bool,
    /// Covariance corpus: plain text, or JSONL with a `text` field. Required by memit, and by
    /// rome unless --no-mom2-adjustment; this repository ships a WikiText-103 train sample
    /// (Wikipedia text, as the reference's statistics are) in data/calibration/wikitext103/.
    #[arg(long, value_name = "FILE")]
    pub stats_corpus: Option<PathBuf>,
    /// Covariance samples: pieces of at most --stats-seqlen tokens, in corpus order.
    #[arg(long, default_value_t = 1000)]
    pub stats_samples: usize,
    /// Tokens per covariance sample.
    #[arg(long, default_value_t = 256)]
    pub stats_seqlen: usize,
    /// Where covariance statistics are cached (default: $XDG_CACHE_HOME/intervene, else
    /// ~/.cache/intervene).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn plan(
    method: EditMethod,
    a: &EditArgs,
    seed: u64,
    cfg: &LlamaConfig,
) -> anyhow::Result<EditPlan> {
    let n = cfg.num_hidden_layers;
    let layers = match method {
        EditMethod::Rome => {
            if a.layers.is_some() {
                return Err(Error::usage("--layers", "ROME edits one layer: use --layer").into());
            }
            vec![a.layer.unwrap_or_else(|| default_rome_layer(n))]
        }
        EditMethod::Memit => {
            if a.layer.is_some() {
                return Err(Error::usage("--layer", "MEMIT takes --layers").into());
            }
            if a.no_mom2_adjustment {
                return Err(Error::usage(
                    "--no-mom2-adjustment",
                    "does not apply to memit (its solve always uses the covariance)",
                )
                .into());
            }
            match &a.layers {
                Some(s) => parse_layers(s, n)?.collect(),
                None => default_memit_layers(n),
            }
        }
    };
    let cache_dir = match &a.cache_dir {
        Some(d) => d.clone(),
        None => default_cache_dir().ok_or_else(|| {
            Error::usage(
                "--cache-dir",
                "neither XDG_CACHE_HOME nor HOME is set: pass --cache-dir",
            )
        })?,
    };
    Ok(EditPlan {
        method,
        requests: a.requests.clone(),
        offset: a.offset,
        limit: a.limit,
        layers,
        value: ValueParams {
            steps: a.steps,
            lr: a.lr,
            weight_decay: a.weight_decay,
            clamp_norm_factor: a.clamp,
            kl_factor: a.kl_factor,
        },
        mom2_adjustment: !a.no_mom2_adjustment,
        lambda: a
            .lambda
            .unwrap_or_else(|| default_memit_lambda(cfg.intermediate_size)),
        stats: StatsSpec {
            corpus: stats_corpus(method, a)?,
            samples: a.stats_samples,
            seqlen: a.stats_seqlen,
            cache_dir,
        },
        templates: TemplateSource::Generated { seed },
    })
}

/// The covariance corpus, required whenever the method uses the statistic (no default: a
/// built-in path would only exist on the machine that built the tool).
fn stats_corpus(method: EditMethod, a: &EditArgs) -> Result<PathBuf, Error> {
    let needed = method == EditMethod::Memit || !a.no_mom2_adjustment;
    match &a.stats_corpus {
        Some(p) => Ok(p.clone()),
        None if !needed => Ok(PathBuf::new()),
        None => Err(Error::usage(
            "--stats-corpus",
            format!(
                "is required by {} (the key covariance){}: pass a text or JSONL file, e.g. \
                 {SUGGESTED_STATS_CORPUS} from the intervene repository (WikiText-103, CC BY-SA)",
                method.name(),
                if method == EditMethod::Rome {
                    " unless --no-mom2-adjustment"
                } else {
                    ""
                }
            ),
        )),
    }
}

pub fn run(method: EditMethod, a: EditArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let cfg = LlamaConfig::from_file(&a.input.join(intervene::checkpoint::CONFIG_FILE))?;
    let plan = plan(method, &a, g.seed, &cfg)?;
    let out = edit_checkpoint(&a.input, &a.output, a.force, &plan, g.device_name())?;
    if a.json {
        print_json(&serde_json::json!({
            "id": out.write.id,
            "output": out.write.output,
            "seconds": out.write.seconds,
            "report": out.report,
        }))?;
    } else {
        println!("{}", out.write.id);
        if !g.quiet {
            eprintln!(
                "{} -> {} in {:.1} s: {} requests, layers {:?}",
                method.name(),
                out.write.output.display(),
                out.write.seconds,
                out.report["batch"]["count"],
                plan.layers
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
