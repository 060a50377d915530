//! Writing a whole checkpoint directory: weights streamed in name order through the
//! deterministic safetensors writer, the side files, and provenance.json carrying the id the
//! weights hashed to, all staged and renamed into place atomically.

use std::borrow::Cow;
use std::path::Path;

use serde_json::Value;

use super::atomic::StagingDir;
use super::provenance::Provenance;
use super::safetensors_write::{SafetensorsWriter, TensorSpec};
use super::{CONFIG_FILE, PROVENANCE_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::error::{Error, Result};

/// The files beside the weights. Kept as bytes so a child copies its parent's unchanged.
#[derive(Clone, Debug, Default)]
pub struct CheckpointFiles {
    pub config: Vec<u8>,
    pub tokenizer: Option<Vec<u8>>,
    pub tokenizer_config: Option<Vec<u8>>,
    pub generation_config: Option<Vec<u8>>,
}

const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
const GENERATION_CONFIG_FILE: &str = "generation_config.json";

pub fn pretty_json(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("json serialises");
    b.push(b'\n');
    b
}

impl CheckpointFiles {
    /// Reads the side files of an existing checkpoint directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<Option<Vec<u8>>> {
            let p = dir.join(name);
            match std::fs::read(&p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("read", &p, e)),
            }
        };
        Ok(CheckpointFiles {
            config: read(CONFIG_FILE)?.ok_or_else(|| {
                Error::usage(
                    "checkpoint",
                    format!("`{}` has no {CONFIG_FILE}", dir.display()),
                )
            })?,
            tokenizer: read(TOKENIZER_FILE)?,
            tokenizer_config: read(TOKENIZER_CONFIG_FILE)?,
            generation_config: read(GENERATION_CONFIG_FILE)?,
        })
    }
}

/// Writes a checkpoint to `out`. `produce` is called once per spec, in name order, and returns
/// that tensor's stored bytes; `provenance` receives the id the weights hashed to.
pub fn write_checkpoint<'a>(
    out: &Path,
    force: bool,
    specs: Vec<TensorSpec>,
    mut produce: impl FnMut(&TensorSpec) -> Result<Cow<'a, [u8]>>,
    files: &CheckpointFiles,
    provenance: impl FnOnce(&str) -> Provenance,
) -> Result<String> {
    let staging = StagingDir::create(out, force)?;
    let mut writer = SafetensorsWriter::create(&staging.path().join(WEIGHTS_FILE), specs.clone())?;
    let mut sorted = specs;
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for spec in &sorted {
        let bytes = produce(spec)?;
        writer.write_tensor(&spec.name, &bytes)?;
    }
    let hashes = writer.tensor_hashes().clone();
    let id = writer.finish()?;
    staging.write_file(CONFIG_FILE, &files.config)?;
    for (name, content) in [
        (TOKENIZER_FILE, &files.tokenizer),
        (TOKENIZER_CONFIG_FILE, &files.tokenizer_config),
        (GENERATION_CONFIG_FILE, &files.generation_config),
    ] {
        if let Some(bytes) = content {
            staging.write_file(name, bytes)?;
        }
    }
    let mut prov = provenance(&id);
    prov.tensors = hashes;
    staging.write_file(PROVENANCE_FILE, &prov.to_json_bytes())?;
    staging.commit()?;
    Ok(id)
}
