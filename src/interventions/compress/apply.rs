//! One compression step end to end: open and check the input, validate the plan, sample the
//! calibration windows, then stream the output checkpoint in name order while the layer walk
//! produces the compressed tensors, and record the step (plan as params, measured report).
//! Every check that can fail on user input runs before the output directory is staged.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::calib::CalibBatch;
use super::device::Device;
use super::pipeline::{Activations, LayerWalk};
use super::plan::CompressPlan;
use super::report::summarise;
use crate::checkpoint::provenance::TOOL_VERSION;
use crate::checkpoint::{
    check_output_path, pretty_json, write_checkpoint, Checkpoint, CheckpointFiles, DType,
    InputFile, Provenance, Step, TensorSpec, TOKENIZER_FILE,
};
use crate::error::{Error, Result};
use crate::model::names::{parse_tensor, Site};
use crate::tokenizer::Tokenizer;

/// What a compression step produced.
#[derive(Clone, Debug)]
pub struct CompressOutcome {
    pub id: String,
    pub output: PathBuf,
    pub seconds: f64,
    pub report: Value,
}

/// Compresses checkpoint `input` into `output` by `plan` (whose `dtype` may be empty: the
/// input's storage dtype), computing on `device` (recorded in provenance).
pub fn compress_checkpoint(
    input: &Path,
    output: &Path,
    force: bool,
    mut plan: CompressPlan,
    device: Device,
) -> Result<CompressOutcome> {
    let start = Instant::now();
    check_output_path(output, force)?;
    let ckpt = Checkpoint::open(input)?;
    let dtype = if plan.dtype.is_empty() {
        ckpt.storage_dtype()
    } else {
        DType::from_user(&plan.dtype).ok_or_else(|| {
            Error::usage(
                "--dtype",
                format!("`{}`; expected f32, f16 or bf16", plan.dtype),
            )
        })?
    };
    plan.dtype = dtype.name().to_string();
    plan.validate(&ckpt.config)?;
    check_inputs_finite(&ckpt, &plan)?;

    let calib = match &plan.calib {
        Some(c) if plan.method.calibrated() => {
            let tok_path = ckpt.dir().join(TOKENIZER_FILE);
            let tokenizer = Tokenizer::from_file(&tok_path)?;
            Some(CalibBatch::prepare(c, &tokenizer)?)
        }
        _ if plan.method.calibrated() => {
            return Err(Error::usage(
                "--calib",
                format!(
                    "{} needs calibration text: pass --calib FILE",
                    plan.method.name()
                ),
            ))
        }
        _ => None,
    };
    let acts = match (&calib, &plan.calib) {
        (Some(b), Some(c)) => Some(Activations::embed(&ckpt, &b.windows, c.chunk_sequences)?),
        _ => None,
    };
    let walk = RefCell::new(LayerWalk::new(&ckpt, &plan, acts, dtype, device)?);

    let specs: Vec<TensorSpec> = ckpt
        .names()
        .filter_map(|n| ckpt.info(n).map(|i| (n, i)))
        .map(|(n, info)| TensorSpec {
            name: n.to_string(),
            dtype,
            shape: info.shape.clone(),
        })
        .collect();
    let mut files = CheckpointFiles::from_dir(ckpt.dir())?;
    if dtype != ckpt.storage_dtype() {
        let mut config = ckpt.config.to_hf_json();
        if let Value::Object(o) = &mut config {
            o.insert("torch_dtype".into(), json!(dtype.torch_name()));
        }
        files.config = pretty_json(&config);
    }
    let mut inputs = Vec::new();
    if let (Some(b), Some(c)) = (&calib, &plan.calib) {
        inputs.push(InputFile {
            role: "calib".into(),
            path: c.file.display().to_string(),
            blake3: b.file_hash.clone(),
        });
    }
    let parent = match &ckpt.provenance {
        Some(p) => p.id.clone(),
        None => ckpt.compute_id(),
    };
    let params = serde_json::to_value(&plan).expect("plan serialises");
    let mut report = Value::Null;
    let id = write_checkpoint(
        output,
        force,
        specs,
        |spec| {
            let mut w = walk.borrow_mut();
            if let Some(l) = w.producer(&spec.name) {
                return Ok(Cow::Owned(w.take(&spec.name, l)?));
            }
            let (info, bytes) = ckpt.bytes(&spec.name)?;
            if info.dtype == dtype {
                return Ok(Cow::Borrowed(bytes));
            }
            Ok(Cow::Owned(dtype.from_f32(&info.dtype.to_f32(bytes))))
        },
        &files,
        |id| {
            let w = walk.borrow();
            let spec = plan.quant.as_ref().map(|q| q.spec());
            let mut r = summarise(
                &w.reports,
                spec.as_ref(),
                calib.as_ref().map(CalibBatch::report),
            );
            r["peak_buffered_bytes"] = json!(w.peak_buffered_bytes);
            report = r.clone();
            let step = Step {
                op: plan.method.name().to_string(),
                category: "compress".into(),
                params: params.clone(),
                inputs: inputs.clone(),
                parent: Some(parent.clone()),
                output: id.to_string(),
                tool_version: TOOL_VERSION.to_string(),
                device: device.name(),
                seconds: start.elapsed().as_secs_f64(),
                report: r,
            };
            match &ckpt.provenance {
                Some(p) => p.child(step),
                None => Provenance::new_import(step),
            }
        },
    )?;
    Ok(CompressOutcome {
        id,
        output: output.to_path_buf(),
        seconds: start.elapsed().as_secs_f64(),
        report,
    })
}

/// NaN or Inf in a weight the step reads is an input error, found before anything is written.
fn check_inputs_finite(ckpt: &Checkpoint, plan: &CompressPlan) -> Result<()> {
    let mut names: Vec<String> = plan
        .targets(&ckpt.config)
        .into_iter()
        .map(|t| t.2)
        .collect();
    if plan.method.calibrated() {
        // The calibration forward reads every layer up to the last compressed one.
        names = ckpt
            .names()
            .filter(|n| match parse_tensor(n) {
                Some(Site::Embed) => true,
                Some(
                    Site::AttnNorm(l) | Site::MlpNorm(l) | Site::Weight(l, _) | Site::Bias(l, _),
                ) => l < plan.layers[1],
                _ => false,
            })
            .map(str::to_string)
            .collect();
    }
    for name in &names {
        let (info, bytes) = ckpt.bytes(name)?;
        let values = info.dtype.to_f32(bytes);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                ckpt.dir(),
                name,
                format!(
                    "non-finite value {} at flat index {i}; {} cannot compress a weight holding NaN or Inf",
                    values[i],
                    plan.method.name()
                ),
            ));
        }
    }
    Ok(())
}
