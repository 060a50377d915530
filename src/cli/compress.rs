//! `intervene rtn|gptq|awq|magnitude|wanda|sparsegpt IN -o OUT [...]`: the compression
//! subcommands share one argument set; each method refuses the flags that mean nothing to it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::interventions::compress::apply::compress_checkpoint;
use intervene::interventions::compress::device::Device;
use intervene::interventions::compress::mask::SparsityPattern;
use intervene::interventions::compress::plan::{
    parse_layers, parse_nm, AwqParams, CalibParams, CompressPlan, Method, PruneParams, QuantParams,
};
use intervene::model::LlamaConfig;
use intervene::Error;
use serde_json::Value;

use super::common::{print_json, Backend, GlobalOpts};

#[derive(Args, Debug)]
pub struct CompressArgs {
    /// Input checkpoint directory.
    pub input: PathBuf,
    /// Output checkpoint directory (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Quantisation: bits per weight, 2..8 (default 4).
    #[arg(long)]
    pub bits: Option<u32>,
    /// Quantisation: consecutive input columns per group; -1 = the whole row (default: -1 for
    /// rtn/gptq, 128 for awq).
    #[arg(long, allow_hyphen_values = true)]
    pub group_size: Option<i64>,
    /// Quantisation: symmetric grid (rtn, gptq).
    #[arg(long, conflicts_with = "asym")]
    pub sym: bool,
    /// Quantisation: asymmetric grid (the default).
    #[arg(long)]
    pub asym: bool,
    /// GPTQ: process columns in order of decreasing Hessian diagonal.
    #[arg(long)]
    pub act_order: bool,
    /// GPTQ: fit every group's grid on the original weights before the solve (AutoGPTQ's
    /// static_groups, what llmcompressor does) instead of refitting each group on the
    /// error-updated weights as it is reached (the reference's default).
    #[arg(long)]
    pub static_groups: bool,
    /// GPTQ/SparseGPT: damping, as a fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    pub damp: f64,
    /// GPTQ/SparseGPT: Cholesky retries with 10x larger damping before giving up.
    #[arg(long, default_value_t = 4)]
    pub damp_retries: u32,
    /// GPTQ/SparseGPT: input columns per lazy-update block.
    #[arg(long, default_value_t = 128)]
    pub block_size: usize,
    /// GPTQ/SparseGPT/Wanda: solve q/k/v, o, gate/up, down in turn, recollecting inputs.
    #[arg(long)]
    pub true_sequential: bool,
    /// Pruning: fraction of weights set to zero, in [0, 1) (default 0.5).
    #[arg(long, allow_hyphen_values = true)]
    pub sparsity: Option<f64>,
    /// Pruning: N:M structure, N nonzero weights kept in every M consecutive inputs (2:4).
    #[arg(long, value_name = "N:M")]
    pub pattern: Option<String>,
    /// Calibration text: plain text, or JSONL with a `text` field (gptq, awq, wanda, sparsegpt).
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,
    /// Calibration windows of --seqlen tokens, sampled from --calib with --seed.
    #[arg(long, default_value_t = 128)]
    pub calib_samples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 2048)]
    pub seqlen: usize,
    /// Draw the windows anywhere in the calibration documents joined into one token stream
    /// (GPTQ's WikiText-2 loader, llm-awq's) instead of inside one document longer than the
    /// window (GPTQ's C4 loader, the default).
    #[arg(long)]
    pub calib_packed: bool,
    /// Calibration windows run through a layer at once (default: 8192 tokens' worth).
    #[arg(long, value_name = "N")]
    pub calib_batch: Option<usize>,
    /// AWQ: windows used for the scale-search losses.
    #[arg(long, default_value_t = 8)]
    pub awq_search_samples: usize,
    /// AWQ: tokens of each window used for the scale-search losses.
    #[arg(long, default_value_t = 512)]
    pub awq_search_seqlen: usize,
    /// Decoder layers to compress: A, A..B (end exclusive), A..=B or A-B (default: all).
    #[arg(long)]
    pub layers: Option<String>,
    /// Tensor-name pattern left alone (repeatable; `*` wildcards, else a substring).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Storage dtype of the output: f32, f16 or bf16 (default: the input's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn refuse(method: Method, flag: &str, given: bool) -> Result<(), Error> {
    if given {
        return Err(Error::usage(
            flag,
            format!("does not apply to {}", method.name()),
        ));
    }
    Ok(())
}

/// Turns the arguments into a plan (validated against the model by the library).
fn plan(
    method: Method,
    a: &CompressArgs,
    seed: u64,
    cfg: &LlamaConfig,
) -> anyhow::Result<CompressPlan> {
    let quant = if method.quantises() {
        refuse(method, "--sparsity", a.sparsity.is_some())?;
        refuse(method, "--pattern", a.pattern.is_some())?;
        let grid = match (method, a.sym) {
            (Method::Awq, _) => {
                refuse(method, "--sym (AWQ's grid has a zero point)", a.sym)?;
                "awq"
            }
            (_, true) => "gptq_sym",
            _ => "gptq_asym",
        };
        Some(QuantParams {
            bits: a.bits.unwrap_or(4),
            group_size: a
                .group_size
                .unwrap_or(if method == Method::Awq { 128 } else { -1 }),
            sym: a.sym,
            grid,
        })
    } else {
        refuse(method, "--bits", a.bits.is_some())?;
        refuse(method, "--group-size", a.group_size.is_some())?;
        refuse(method, "--sym", a.sym)?;
        refuse(method, "--asym", a.asym)?;
        None
    };
    refuse(method, "--act-order", a.act_order && method != Method::Gptq)?;
    refuse(
        method,
        "--static-groups",
        a.static_groups && method != Method::Gptq,
    )?;
    refuse(
        method,
        "--true-sequential",
        a.true_sequential && !matches!(method, Method::Gptq | Method::Sparsegpt | Method::Wanda),
    )?;
    let prune = if method.quantises() {
        None
    } else {
        let sparsity = match (&a.pattern, a.sparsity) {
            (Some(p), s) => {
                let SparsityPattern::NM { n, m } = parse_nm(p)? else {
                    unreachable!("parse_nm returns N:M")
                };
                let implied = n as f64 / m as f64;
                if let Some(s) = s {
                    if (s - implied).abs() > 1e-9 {
                        return Err(Error::usage(
                            "--sparsity",
                            format!("{s} disagrees with --pattern {p}, which implies {implied}"),
                        )
                        .into());
                    }
                }
                implied
            }
            (None, s) => s.unwrap_or(0.5),
        };
        Some(PruneParams {
            sparsity,
            pattern: a.pattern.clone(),
        })
    };
    let calib = if method.calibrated() {
        let file = a.calib.clone().ok_or_else(|| {
            Error::usage(
                "--calib",
                format!(
                    "{} needs calibration text: pass --calib FILE",
                    method.name()
                ),
            )
        })?;
        Some(CalibParams {
            file,
            samples: a.calib_samples,
            seqlen: a.seqlen,
            seed,
            chunk_sequences: a.calib_batch.unwrap_or((8192 / a.seqlen.max(1)).max(1)),
            packed: a.calib_packed,
        })
    } else {
        refuse(
            method,
            "--calib (it uses no calibration data)",
            a.calib.is_some(),
        )?;
        refuse(
            method,
            "--calib-packed (it uses no calibration data)",
            a.calib_packed,
        )?;
        None
    };
    if a.calib_batch == Some(0) {
        return Err(Error::usage("--calib-batch", "must be at least 1").into());
    }
    let layers = match &a.layers {
        Some(s) => parse_layers(s, cfg.num_hidden_layers)?,
        None => 0..cfg.num_hidden_layers,
    };
    let awq = (method == Method::Awq).then(|| AwqParams {
        search_samples: a.awq_search_samples.max(1),
        search_seqlen: a.awq_search_seqlen.max(1),
        ..Default::default()
    });
    Ok(CompressPlan {
        method,
        quant,
        prune,
        calib,
        awq,
        damp: a.damp,
        damp_retries: a.damp_retries,
        block_size: a.block_size,
        act_order: a.act_order,
        static_groups: a.static_groups,
        true_sequential: a.true_sequential,
        layers: [layers.start, layers.end],
        skip: a.skip.clone(),
        dtype: a.dtype.clone().unwrap_or_default(),
    })
}

pub fn run(method: Method, a: CompressArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let cfg = LlamaConfig::from_file(&a.input.join(intervene::checkpoint::CONFIG_FILE))?;
    let plan = plan(method, &a, g.seed, &cfg)?;
    // The plan is checked before the device is opened, so bad flags fail fast either way.
    let backend = if method == Method::Awq {
        // AWQ's searches run on the host (compress::gpu_walk says why); say so, record cpu.
        if g.wants_gpu() {
            g.note(
                "note: awq runs on the CPU backend (its scale and clip searches have no GPU path)",
            );
        }
        Backend::Cpu
    } else {
        g.backend()?
    };
    let device = match &backend {
        Backend::Cpu => Device::Cpu,
        #[cfg(feature = "gpu")]
        Backend::Gpu(gpu) => Device::Gpu(gpu),
    };
    let out = compress_checkpoint(&a.input, &a.output, a.force, plan, device)?;
    if a.json {
        print_json(&serde_json::json!({
            "id": out.id,
            "output": out.output,
            "seconds": out.seconds,
            "report": summary(&out.report),
        }))?;
    } else {
        println!("{}", out.id);
        if !g.quiet {
            let r = &out.report;
            let mut line = format!(
                "{} -> {} in {:.1} s: {} tensors, sparsity {:.4}",
                method.name(),
                out.output.display(),
                out.seconds,
                r["tensors_compressed"],
                r["sparsity_overall"].as_f64().unwrap_or(0.0)
            );
            if let Some(b) = r.get("bits") {
                line += &format!(", {b} bits, group {}", r["group_size"]);
            }
            if r["damping_retries"].as_u64().unwrap_or(0) > 0 {
                line += &format!(", damping retried {} times", r["damping_retries"]);
            }
            eprintln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The report without the per-tensor list (kept in provenance.json).
fn summary(r: &Value) -> Value {
    let mut r = r.clone();
    if let Value::Object(o) = &mut r {
        o.remove("per_tensor");
    }
    r
}
