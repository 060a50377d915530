//! `provenance.json`: the chain of steps from the import on, and the evaluations run on each
//! checkpoint of the lineage. A child inherits its parent's chain and evaluations, so `score`
//! works from the checkpoint directories alone. Schema: DESIGN.md, "provenance.json".

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub const FORMAT: &str = "intervene-provenance/1";
pub const TOOL_VERSION: &str = concat!("intervene ", env!("CARGO_PKG_VERSION"));

/// A file a step read, by path as given and by content hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputFile {
    /// What the file was to the step (`source`, `requests`, `calib`, `forget`, ...).
    pub role: String,
    pub path: String,
    pub blake3: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub op: String,
    /// import | edit | unlearn | compress
    pub category: String,
    pub params: Value,
    pub inputs: Vec<InputFile>,
    pub parent: Option<String>,
    pub output: String,
    pub tool_version: String,
    pub device: String,
    pub seconds: f64,
    /// Facts the step found while running (achieved sparsity, damping retries, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub report: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub checkpoint: String,
    pub task: String,
    pub data: InputFile,
    pub settings: Value,
    pub metrics: Value,
    pub seconds: f64,
    pub tool_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    pub format: String,
    pub id: String,
    pub chain: Vec<Step>,
    #[serde(default)]
    pub evaluations: Vec<Evaluation>,
}

/// The ceiling on provenance.json's size; a chain of thousands of steps is a few MiB.
pub const MAX_PROVENANCE_BYTES: u64 = 256 * 1024 * 1024;

impl Provenance {
    pub fn new_import(step: Step) -> Self {
        Provenance {
            format: FORMAT.to_string(),
            id: step.output.clone(),
            chain: vec![step],
            evaluations: Vec::new(),
        }
    }

    /// The provenance of a child: the parent's chain and evaluations plus the new step.
    pub fn child(&self, step: Step) -> Self {
        let mut chain = self.chain.clone();
        let id = step.output.clone();
        chain.push(step);
        Provenance {
            format: FORMAT.to_string(),
            id,
            chain,
            evaluations: self.evaluations.clone(),
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("read", path, e))?;
        if meta.len() > MAX_PROVENANCE_BYTES {
            return Err(Error::format(
                "provenance",
                path,
                "size",
                format!("{} bytes exceeds the cap", meta.len()),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let p: Provenance = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format("provenance", path, "json", e.to_string()))?;
        if p.format != FORMAT {
            return Err(Error::format(
                "provenance",
                path,
                "format",
                format!("`{}`, expected `{FORMAT}`", p.format),
            ));
        }
        Ok(p)
    }

    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("provenance serialises");
        v.push(b'\n');
        v
    }
}
