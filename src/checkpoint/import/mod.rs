//! Import: turn a GGUF file or a Hugging Face model (directory, or `.safetensors` with a
//! `config.json` beside it) into a checkpoint directory with an `import` provenance step.

mod from_gguf;
mod from_hf;
mod llama_names;

pub(crate) use llama_names::{gguf_name, permute_rows};

use std::path::{Path, PathBuf};

use crate::checkpoint::DType;
use crate::error::{Error, Result};

pub use from_gguf::import_gguf;
pub use from_hf::import_hf;

/// A validated import plan (what the CLI builds from its arguments, and what provenance records).
#[derive(Clone, Debug)]
pub struct ImportPlan {
    pub source: PathBuf,
    pub output: PathBuf,
    /// Storage dtype of the output; `None` picks the default (DESIGN.md, "dtype").
    pub dtype: Option<DType>,
    pub force: bool,
}

/// What an import wrote.
#[derive(Clone, Debug)]
pub struct ImportOutcome {
    pub id: String,
    pub output: PathBuf,
    pub tensors: usize,
    pub dtype: DType,
    pub seconds: f64,
}

/// Dispatches on the source's kind: a `.gguf` file, a `.safetensors` file, or a directory.
pub fn import(plan: &ImportPlan) -> Result<ImportOutcome> {
    let src = &plan.source;
    let meta = std::fs::metadata(src).map_err(|e| Error::io("read", src, e))?;
    if meta.is_dir() {
        return import_hf(plan);
    }
    match sniff(src)? {
        SourceKind::Gguf => import_gguf(plan),
        SourceKind::Safetensors => import_hf(plan),
    }
}

enum SourceKind {
    Gguf,
    Safetensors,
}

/// GGUF files start with the magic `GGUF`; anything else ending in `.safetensors` is treated
/// as safetensors (whose first 8 bytes are a length), and the rest is refused by name.
fn sniff(path: &Path) -> Result<SourceKind> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let n = f.read(&mut magic).map_err(|e| Error::io("read", path, e))?;
    if n == 4 && &magic == b"GGUF" {
        return Ok(SourceKind::Gguf);
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(SourceKind::Safetensors);
    }
    if path.extension().is_some_and(|e| e == "gguf") {
        return Err(Error::format(
            "GGUF file",
            path,
            "magic",
            format!("expected `GGUF`, found {:?}", &magic[..n]),
        ));
    }
    Err(Error::usage(
        "SRC",
        format!(
            "`{}` is neither a GGUF file, a .safetensors file nor a model directory",
            path.display()
        ),
    ))
}

/// The provenance of a fresh import: a one-step chain with no parent.
fn import_provenance(
    params: serde_json::Value,
    inputs: Vec<crate::checkpoint::InputFile>,
    id: &str,
    start: std::time::Instant,
) -> crate::checkpoint::Provenance {
    crate::checkpoint::Provenance::new_import(crate::checkpoint::Step {
        op: "import".into(),
        category: "import".into(),
        params,
        inputs,
        parent: None,
        output: id.to_string(),
        tool_version: crate::checkpoint::provenance::TOOL_VERSION.into(),
        device: "cpu".into(),
        seconds: elapsed(start),
        report: serde_json::Value::Null,
    })
}

fn elapsed(t: std::time::Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}
