//! `intervene inspect DIR`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intervene::checkpoint::Checkpoint;
use serde_json::{json, Value};

use super::common::{print_json, GlobalOpts};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Checkpoint directory.
    pub dir: PathBuf,
    /// Print everything as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InspectArgs, _g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let ckpt = Checkpoint::open(&a.dir)?;
    let tensors: Vec<Value> = ckpt
        .names()
        .map(|n| {
            let info = ckpt.info(n).expect("listed");
            json!({"name": n, "dtype": info.dtype.name(), "shape": info.shape})
        })
        .collect();
    let id = ckpt.provenance.as_ref().map(|p| p.id.clone());
    let chain = ckpt
        .provenance
        .as_ref()
        .map(|p| json!(p.chain))
        .unwrap_or(json!([]));
    let evals = ckpt
        .provenance
        .as_ref()
        .map(|p| json!(p.evaluations))
        .unwrap_or(json!([]));
    if a.json {
        print_json(&json!({
            "dir": a.dir,
            "id": id,
            "config": ckpt.config.to_hf_json(),
            "tensors": tensors,
            "chain": chain,
            "evaluations": evals,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &ckpt.config;
    let mut out = std::io::stdout().lock();
    writeln!(out, "checkpoint  {}", a.dir.display())?;
    writeln!(
        out,
        "id          {}",
        id.as_deref().unwrap_or("(no provenance.json)")
    )?;
    writeln!(
        out,
        "model       {} ({}): {} layers, hidden {}, {} heads / {} kv heads (head dim {}), ffn {}, vocab {}",
        c.architecture,
        c.model_type,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size
    )?;
    writeln!(
        out,
        "            rope theta {}, rms eps {}, tied embeddings {}, context {}",
        c.rope_theta, c.rms_norm_eps, c.tie_word_embeddings, c.max_position_embeddings
    )?;
    let total: usize = ckpt
        .names()
        .map(|n| ckpt.info(n).map_or(0, |i| i.numel()))
        .sum();
    writeln!(
        out,
        "tensors     {} ({} parameters, stored {})",
        tensors.len(),
        total,
        ckpt.storage_dtype()
    )?;
    if let Some(p) = &ckpt.provenance {
        writeln!(out, "\nchain")?;
        for (i, s) in p.chain.iter().enumerate() {
            writeln!(
                out,
                "  {i}. {:<10} {:<9} -> {}  ({}, {:.2} s)",
                s.op,
                s.category,
                short(&s.output),
                s.device,
                s.seconds
            )?;
            writeln!(out, "     params {}", s.params)?;
            write_report(&mut out, &s.report)?;
            for f in &s.inputs {
                writeln!(out, "     {} {} ({})", f.role, f.path, short(&f.blake3))?;
            }
        }
        if !p.evaluations.is_empty() {
            writeln!(out, "\nevaluations")?;
            for e in &p.evaluations {
                writeln!(
                    out,
                    "  {:<5} on {} data {}: {}",
                    e.task,
                    short(&e.checkpoint),
                    e.data.path,
                    e.metrics
                )?;
            }
        }
    }
    writeln!(out, "\n{:<56} {:<5} shape", "tensor", "dtype")?;
    for n in ckpt.names() {
        let info = ckpt.info(n).expect("listed");
        writeln!(out, "{n:<56} {:<5} {:?}", info.dtype.name(), info.shape)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The first 16 hex digits of an id, enough to tell checkpoints apart in a table.
fn short(id: &str) -> &str {
    let end = id.find(':').map_or(0, |i| i + 1) + 16;
    &id[..end.min(id.len())]
}

/// The step's report, one top-level entry per line; the per-tensor list and the calibration
/// window positions are summarised (they are in full in `--json` and provenance.json).
fn write_report(out: &mut impl Write, report: &Value) -> std::io::Result<()> {
    let Value::Object(o) = report else {
        if !report.is_null() {
            writeln!(out, "     report {report}")?;
        }
        return Ok(());
    };
    for (k, v) in o {
        match (k.as_str(), v) {
            ("per_tensor", Value::Array(a)) => {
                writeln!(out, "     report {k}: {} tensors (see --json)", a.len())?;
            }
            ("calibration", Value::Object(c)) => {
                let brief: serde_json::Map<String, Value> = c
                    .iter()
                    .filter(|(ck, _)| ck.as_str() != "positions")
                    .map(|(ck, cv)| (ck.clone(), cv.clone()))
                    .collect();
                writeln!(out, "     report {k}: {}", Value::Object(brief))?;
            }
            _ => writeln!(out, "     report {k}: {v}")?,
        }
    }
    Ok(())
}
