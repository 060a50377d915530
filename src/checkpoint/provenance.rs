//! `provenance.json`: the chain of steps from the import on, and the evaluations run on each
//! checkpoint of the lineage. A child inherits its parent's chain and evaluations, so `score`
//! works from the checkpoint directories alone. Schema: DESIGN.md, "provenance.json".

use std::collections::BTreeMap;
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
    /// One digest per chain entry (see [`entry_digest`]), so `verify` can tell which entry was
    /// edited after it was written. Empty in files written before digests existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain_digests: Vec<String>,
    /// One digest per evaluation, chained the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluation_digests: Vec<String>,
    /// The blake3 of each tensor's stored bytes in this checkpoint (not inherited), so `verify`
    /// can name the tensors that changed when the id does not match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tensors: BTreeMap<String, String>,
}

/// The digest of one chain entry or evaluation: blake3 over a domain tag, the previous entry's
/// digest (empty for the first) and the entry's compact JSON. Chaining ties each entry to its
/// place; it makes edits evident, not impossible (anyone can recompute it; signing the id is
/// the defence against a deliberate forger).
pub fn entry_digest<T: Serialize>(tag: &str, prev: Option<&str>, entry: &T) -> String {
    let json = serde_json::to_vec(entry).expect("provenance entries serialise");
    let mut h = blake3::Hasher::new();
    for part in [
        tag.as_bytes(),
        prev.unwrap_or("").as_bytes(),
        json.as_slice(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    format!("blake3:{}", h.finalize().to_hex())
}

pub const CHAIN_TAG: &str = "intervene-step/1";
pub const EVALUATION_TAG: &str = "intervene-evaluation/1";

/// Digests for `entries`: the `recorded` ones for the first `known` entries (a file may record
/// too many or too few; verify reports that), computed for the rest.
fn extend_digests<T: Serialize>(
    tag: &str,
    entries: &[T],
    recorded: &[String],
    known: usize,
) -> Vec<String> {
    let mut out: Vec<String> = recorded
        .iter()
        .take(known.min(entries.len()))
        .cloned()
        .collect();
    for e in &entries[out.len()..] {
        let d = entry_digest(tag, out.last().map(String::as_str), e);
        out.push(d);
    }
    out
}

/// The ceiling on provenance.json's size; a chain of thousands of steps is a few MiB.
pub const MAX_PROVENANCE_BYTES: u64 = 256 * 1024 * 1024;

impl Provenance {
    pub fn new_import(step: Step) -> Self {
        let chain = vec![step];
        Provenance {
            format: FORMAT.to_string(),
            id: chain[0].output.clone(),
            chain_digests: extend_digests(CHAIN_TAG, &chain, &[], 0),
            chain,
            evaluations: Vec::new(),
            evaluation_digests: Vec::new(),
            tensors: BTreeMap::new(),
        }
    }

    /// The provenance of a child: the parent's chain and evaluations plus the new step. The
    /// parent's digests are kept as recorded (entries from before digests get theirs now).
    pub fn child(&self, step: Step) -> Self {
        let mut chain = self.chain.clone();
        let id = step.output.clone();
        chain.push(step);
        Provenance {
            format: FORMAT.to_string(),
            id,
            chain_digests: extend_digests(CHAIN_TAG, &chain, &self.chain_digests, self.chain.len()),
            chain,
            evaluations: self.evaluations.clone(),
            evaluation_digests: extend_digests(
                EVALUATION_TAG,
                &self.evaluations,
                &self.evaluation_digests,
                self.evaluations.len(),
            ),
            tensors: BTreeMap::new(),
        }
    }

    /// Appends an evaluation with its digest.
    pub fn push_evaluation(&mut self, eval: Evaluation) {
        let known = self.evaluations.len();
        self.evaluations.push(eval);
        self.evaluation_digests = extend_digests(
            EVALUATION_TAG,
            &self.evaluations,
            &self.evaluation_digests,
            known,
        );
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
        Self::from_bytes(&bytes, path)
    }

    /// Parses provenance.json's bytes (`path` is only for messages).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let p: Provenance = serde_json::from_slice(bytes)
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
