//! Hugging Face model -> checkpoint: the tensors the config needs, converted to the chosen
//! dtype (default: as stored), renamed nowhere (already HF names), side files copied.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::{elapsed, import_provenance, ImportOutcome, ImportPlan};
use crate::checkpoint::{
    hash_file, pretty_json, write_checkpoint, Checkpoint, CheckpointFiles, InputFile, TensorSpec,
    CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE,
};
use crate::error::{Error, Result};

pub fn import_hf(plan: &ImportPlan) -> Result<ImportOutcome> {
    let start = Instant::now();
    crate::checkpoint::check_output_path(&plan.output, plan.force)?;
    let src = &plan.source;
    let ckpt = if src.is_dir() {
        Checkpoint::open(src)?
    } else {
        Checkpoint::open_file(src)?
    };
    let dtype = plan.dtype.unwrap_or_else(|| ckpt.storage_dtype());
    let expected = ckpt.config.expected_tensors();
    let dropped: Vec<String> = ckpt
        .names()
        .filter(|n| !expected.iter().any(|(e, _)| e == n))
        .map(str::to_string)
        .collect();
    let mut files = CheckpointFiles::from_dir(ckpt.dir())?;
    let mut config = ckpt.config.to_hf_json();
    if let Value::Object(o) = &mut config {
        o.insert("torch_dtype".into(), json!(dtype.torch_name()));
    }
    files.config = pretty_json(&config);
    let specs: Vec<TensorSpec> = expected
        .iter()
        .map(|(name, shape)| TensorSpec {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
        })
        .collect();
    let inputs = source_inputs(src, &ckpt)?;
    let id = write_checkpoint(
        &plan.output,
        plan.force,
        specs,
        |spec| {
            let (info, bytes) = ckpt.bytes(&spec.name)?;
            if info.dtype == dtype {
                return Ok(Cow::Borrowed(bytes));
            }
            Ok(Cow::Owned(dtype.from_f32(&info.dtype.to_f32(bytes))))
        },
        &files,
        |id| {
            let params = json!({
                "source_format": "safetensors",
                "dtype": dtype.name(),
                "source_dtype": ckpt.storage_dtype().name(),
                "dropped_tensors": dropped,
            });
            import_provenance(params, inputs, id, start)
        },
    )?;
    Ok(ImportOutcome {
        id,
        output: plan.output.clone(),
        tensors: expected.len(),
        dtype,
        seconds: elapsed(start),
    })
}

/// Every file the import read, hashed: the weights (each shard), the index and config.json.
fn source_inputs(src: &Path, ckpt: &Checkpoint) -> Result<Vec<InputFile>> {
    let dir = ckpt.dir();
    let mut paths = Vec::new();
    if src.is_dir() {
        let index = dir.join(INDEX_FILE);
        if index.exists() {
            paths.push(("index", index));
            for shard in ckpt.shard_paths() {
                paths.push(("weights", shard.to_path_buf()));
            }
        } else {
            paths.push(("weights", dir.join(WEIGHTS_FILE)));
        }
    } else {
        paths.push(("weights", src.to_path_buf()));
    }
    paths.push(("config", dir.join(CONFIG_FILE)));
    paths
        .into_iter()
        .map(|(role, p)| {
            Ok(InputFile {
                role: role.into(),
                blake3: hash_file(&p)?,
                path: p.display().to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|e: Error| e)
}
