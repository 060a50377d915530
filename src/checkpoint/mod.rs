//! Checkpoint directories: reading (single-file or sharded safetensors through memory maps,
//! config.json, provenance.json), the content id, and atomic writing. Layout: DESIGN.md,
//! "The checkpoint directory".

mod atomic;
mod dtype;
pub mod export;
pub mod gguf;
mod id;
pub mod import;
pub mod provenance;
mod safetensors_read;
mod safetensors_write;
mod verify;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use atomic::{check_output_file, check_output_path, replace_file, StagingDir, StagingFile};
pub use dtype::DType;
pub use id::{hash_file, IdHasher};
pub use provenance::{Evaluation, InputFile, Provenance, Step};
pub use safetensors_read::{parse as parse_safetensors, SafetensorsFile, TensorInfo};
pub use safetensors_write::{tensor_hash, SafetensorsWriter, TensorSpec};
pub use verify::{check_provenance, verify, verify_with, VerifyOptions, VerifyReport};
pub use write::{pretty_json, write_checkpoint, CheckpointFiles};

use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::model::LlamaConfig;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const CONFIG_FILE: &str = "config.json";
pub const PROVENANCE_FILE: &str = "provenance.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// An opened checkpoint: memory-mapped weights, the parsed config, and the provenance if any.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<SafetensorsFile>,
    /// Tensor name -> index into `shards`.
    index: BTreeMap<String, usize>,
    pub config: LlamaConfig,
    pub provenance: Option<Provenance>,
}

impl Checkpoint {
    /// Opens a checkpoint directory (ours or a Hugging Face model directory).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::usage(
                "checkpoint",
                format!("`{}` is not a directory", dir.display()),
            ));
        }
        let config = LlamaConfig::from_file(&dir.join(CONFIG_FILE))?;
        let (shard_files, weight_map) = shard_files(dir)?;
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for (i, path) in shard_files.iter().enumerate() {
            let f = SafetensorsFile::open(path)?;
            for name in f.tensors().keys() {
                if index.insert(name.clone(), i).is_some() {
                    return Err(Error::tensor(path, name, "appears in more than one shard"));
                }
            }
            shards.push(f);
        }
        // The index must describe the shards truthfully: every listed tensor in its named file.
        for (name, file) in &weight_map {
            let listed = dir.join(file);
            match index.get(name) {
                Some(&i) if shards[i].path() == listed => {}
                Some(&i) => {
                    return Err(Error::format(
                        "safetensors index",
                        dir.join(INDEX_FILE),
                        format!("weight_map.{name}"),
                        format!(
                            "says `{file}`, but the tensor is in `{}`",
                            shards[i].path().display()
                        ),
                    ))
                }
                None => {
                    return Err(Error::format(
                        "safetensors index",
                        dir.join(INDEX_FILE),
                        format!("weight_map.{name}"),
                        format!("tensor not found in `{file}`"),
                    ))
                }
            }
        }
        let prov_path = dir.join(PROVENANCE_FILE);
        let provenance = if prov_path.exists() {
            Some(Provenance::read(&prov_path)?)
        } else {
            None
        };
        let ckpt = Checkpoint {
            dir: dir.to_path_buf(),
            shards,
            index,
            config,
            provenance,
        };
        ckpt.check_against_config()?;
        Ok(ckpt)
    }

    /// Opens a single `.safetensors` file with a `config.json` beside it.
    pub fn open_file(file: &Path) -> Result<Self> {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let config = LlamaConfig::from_file(&dir.join(CONFIG_FILE))?;
        let f = SafetensorsFile::open(file)?;
        let index = f.tensors().keys().map(|n| (n.clone(), 0)).collect();
        let ckpt = Checkpoint {
            dir: dir.to_path_buf(),
            shards: vec![f],
            index,
            config,
            provenance: None,
        };
        ckpt.check_against_config()?;
        Ok(ckpt)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files the weights are read from.
    pub fn shard_paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(SafetensorsFile::path)
    }

    /// Tensor names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index
            .get(name)
            .and_then(|&i| self.shards[i].info(name))
    }

    fn shard_of(&self, name: &str) -> Result<&SafetensorsFile> {
        self.index
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| Error::tensor(&self.dir, name, "missing from the checkpoint"))
    }

    /// Raw stored bytes of a tensor, borrowed from the memory map.
    pub fn bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let shard = self.shard_of(name)?;
        let info = shard.info(name).expect("indexed");
        Ok((info, shard.bytes(name).expect("indexed")))
    }

    /// A tensor converted to f32 for compute.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        let (info, bytes) = self.bytes(name)?;
        Ok(Tensor::new(info.shape.clone(), info.dtype.to_f32(bytes)).expect("validated at open"))
    }

    /// The dtype most of the weights are stored in (what outputs keep by default).
    pub fn storage_dtype(&self) -> DType {
        let mut counts: BTreeMap<DType, usize> = BTreeMap::new();
        for name in self.index.keys() {
            if let Some(info) = self.info(name) {
                *counts.entry(info.dtype).or_default() += info.numel();
            }
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d)
            .unwrap_or(DType::F32)
    }

    /// Recomputes the content id from the stored tensors.
    pub fn compute_id(&self) -> String {
        let mut h = IdHasher::new();
        for name in self.index.keys() {
            let (info, bytes) = self.bytes(name).expect("indexed");
            h.tensor(name, info.dtype, &info.shape, bytes);
        }
        h.finish()
    }

    /// Every tensor the config needs must be present with the right shape; extra tensors
    /// (rotary caches some exporters write) are tolerated only when known to be harmless.
    fn check_against_config(&self) -> Result<()> {
        let cfg_path = self.dir.join(CONFIG_FILE);
        for (name, shape) in self.config.expected_tensors() {
            let Some(info) = self.info(&name) else {
                return Err(Error::tensor(
                    &self.dir,
                    &name,
                    format!("missing (config.json `{}` needs it)", cfg_path.display()),
                ));
            };
            if info.shape != shape {
                return Err(Error::tensor(
                    &self.dir,
                    &name,
                    format!(
                        "shape {:?} disagrees with config.json, which implies {:?}",
                        info.shape, shape
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The safetensors files of a checkpoint directory (the index's shards, or `model.safetensors`)
/// and the index's tensor -> file map (empty without an index).
fn shard_files(dir: &Path) -> Result<(Vec<PathBuf>, BTreeMap<String, String>)> {
    let index_path = dir.join(INDEX_FILE);
    if !index_path.exists() {
        let single = dir.join(WEIGHTS_FILE);
        if !single.exists() {
            return Err(Error::usage(
                "checkpoint",
                format!(
                    "`{}` has neither {WEIGHTS_FILE} nor {INDEX_FILE}",
                    dir.display()
                ),
            ));
        }
        return Ok((vec![single], BTreeMap::new()));
    }
    let bytes = std::fs::read(&index_path).map_err(|e| Error::io("read", &index_path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format("safetensors index", &index_path, "json", e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            Error::format(
                "safetensors index",
                &index_path,
                "weight_map",
                "missing or not an object",
            )
        })?;
    let mut files: Vec<String> = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (tensor, file) in map {
        let f = file.as_str().ok_or_else(|| {
            Error::format(
                "safetensors index",
                &index_path,
                format!("weight_map.{tensor}"),
                "not a string",
            )
        })?;
        // A shard name is a plain file name: no directories, so an index cannot point outside.
        if f.is_empty() || f.contains('/') || f.contains('\\') || f == "." || f == ".." {
            return Err(Error::format(
                "safetensors index",
                &index_path,
                format!("weight_map.{tensor}"),
                format!("`{f}` is not a plain file name"),
            ));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
        weight_map.insert(tensor.clone(), f.to_string());
    }
    files.sort();
    Ok((files.into_iter().map(|f| dir.join(f)).collect(), weight_map))
}
