//! A deterministic, streaming safetensors writer. The header is laid out from the full list of
//! tensor specs before any data (so compression can write tensors as it finishes them); keys
//! are in name order, the only metadata is `format: pt`, and the header is space-padded to a
//! multiple of 8 bytes. The checkpoint id is hashed from the same bytes as they are written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::dtype::DType;
use super::id::IdHasher;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

pub struct SafetensorsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    specs: Vec<TensorSpec>,
    next: usize,
    id: IdHasher,
    /// Each tensor's `blake3:<hex>` (recorded in provenance so verify can name a changed one).
    hashes: BTreeMap<String, String>,
}

impl SafetensorsWriter {
    /// Creates the file and writes its header. Specs are sorted by name; duplicates are refused.
    pub fn create(path: &Path, mut specs: Vec<TensorSpec>) -> Result<Self> {
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = specs.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::tensor(path, &w[0].name, "appears twice"));
        }
        let mut header = Map::new();
        header.insert("__metadata__".to_string(), json!({"format": "pt"}));
        let mut offset = 0usize;
        for s in &specs {
            let end = offset + s.byte_len();
            header.insert(
                s.name.clone(),
                json!({"dtype": s.dtype.name(), "shape": s.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        // serde_json's map keeps insertion order (preserve_order), so sort explicitly:
        // __metadata__ first, then tensors by name (already sorted).
        let mut text = serde_json::to_string(&Value::Object(header)).expect("header serialises");
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut write = |b: &[u8]| out.write_all(b).map_err(|e| Error::io("write", path, e));
        write(&(text.len() as u64).to_le_bytes())?;
        write(text.as_bytes())?;
        Ok(SafetensorsWriter {
            path: path.to_path_buf(),
            out,
            specs,
            next: 0,
            id: IdHasher::new(),
            hashes: BTreeMap::new(),
        })
    }

    /// The name the writer expects next (tensors are written in name order).
    pub fn next_name(&self) -> Option<&str> {
        self.specs.get(self.next).map(|s| s.name.as_str())
    }

    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(spec) = self.specs.get(self.next) else {
            return Err(Error::tensor(
                &self.path,
                name,
                "written after the last planned tensor",
            ));
        };
        if spec.name != name {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("written out of order; expected `{}`", spec.name),
            ));
        }
        if bytes.len() != spec.byte_len() {
            return Err(Error::tensor(
                &self.path,
                name,
                format!(
                    "{} bytes, but {} {:?} needs {}",
                    bytes.len(),
                    spec.dtype,
                    spec.shape,
                    spec.byte_len()
                ),
            ));
        }
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.id.tensor(&spec.name, spec.dtype, &spec.shape, bytes);
        self.hashes.insert(spec.name.clone(), tensor_hash(bytes));
        self.next += 1;
        Ok(())
    }

    /// The hashes of the tensors written so far, by name.
    pub fn tensor_hashes(&self) -> &BTreeMap<String, String> {
        &self.hashes
    }

    /// Flushes and fsyncs; returns the checkpoint id.
    pub fn finish(mut self) -> Result<String> {
        if let Some(s) = self.specs.get(self.next) {
            return Err(Error::tensor(&self.path, &s.name, "never written"));
        }
        self.out
            .flush()
            .map_err(|e| Error::io("write", &self.path, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write", &self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        Ok(self.id.finish())
    }
}

/// The per-tensor hash recorded in provenance: blake3 of the stored bytes.
pub fn tensor_hash(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}
