//! `export gguf`: a checkpoint directory as one GGUF v3 file that llama.cpp loads — llama
//! architecture metadata, the tokenizer rebuilt from tokenizer.json, the tensors under
//! llama.cpp's names with Q/K rows permuted for its rope, in F32, F16, Q8_0 or Q4_0, and the
//! provenance chain under `intervene.*`. The file is written to a temp file beside the output,
//! fsynced and renamed (nothing at the output on failure); the input is only read.
//!
//! Q4_0 and a `--bits 4 --sym` checkpoint: see `gguf::dequant::quant_q4_0` for when the
//! export is lossless (README, "export gguf").

mod metadata;
mod tensors;

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::checkpoint::gguf::dequant::QuantStats;
use crate::checkpoint::gguf::writer::{GgufWriteError, GgufWriter};
use crate::checkpoint::gguf::GgmlType;
use crate::checkpoint::{Checkpoint, StagingFile};
use crate::error::{Error, Result};
use crate::tokenizer::{gguf_vocab_from_dir, SpecialIds};

/// The type the matrices are written in (norms and biases stay F32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportType {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl ExportType {
    pub fn name(self) -> &'static str {
        match self {
            ExportType::F32 => "f32",
            ExportType::F16 => "f16",
            ExportType::Q8_0 => "q8_0",
            ExportType::Q4_0 => "q4_0",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::F32, Self::F16, Self::Q8_0, Self::Q4_0]
            .into_iter()
            .find(|t| t.name() == s)
    }

    pub fn ggml_type(self) -> GgmlType {
        match self {
            ExportType::F32 => GgmlType::F32,
            ExportType::F16 => GgmlType::F16,
            ExportType::Q8_0 => GgmlType::Q8_0,
            ExportType::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// `general.file_type` (llama.h `llama_ftype`: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2,
    /// MOSTLY_Q8_0 7).
    pub fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q4_0 => 2,
            ExportType::Q8_0 => 7,
        }
    }
}

/// A validated export plan.
#[derive(Clone, Debug)]
pub struct ExportPlan {
    pub source: PathBuf,
    pub output: PathBuf,
    pub ty: ExportType,
    /// `general.name`; default: the source directory's name.
    pub name: Option<String>,
    pub force: bool,
}

/// One tensor as written.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub blocks: usize,
    /// Blocks that decode to the checkpoint's values bit for bit.
    pub lossless_blocks: usize,
    /// Q4_0 blocks stored on the checkpoint's own 4-bit grid.
    pub grid_blocks: usize,
    pub max_abs_err: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportOutcome {
    pub output: PathBuf,
    pub id: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub bytes: u64,
    pub blake3: String,
    pub tensors: Vec<TensorReport>,
    pub seconds: f64,
}

pub fn export_gguf(plan: &ExportPlan) -> Result<ExportOutcome> {
    let start = Instant::now();
    crate::checkpoint::check_output_file(&plan.output, plan.force)?;
    let ckpt = Checkpoint::open(&plan.source)?;
    let cfg = &ckpt.config;
    if cfg.rope_scaling.is_some() {
        // llama.cpp stores llama3 rope scaling as a `rope_freqs` tensor, which our own GGUF
        // import refuses; writing it is not implemented.
        return Err(Error::unsupported(
            "rope scaling",
            ckpt.dir(),
            "config.json has llama3 rope_scaling, which export gguf does not write yet",
        ));
    }
    let vocab = gguf_vocab_from_dir(
        ckpt.dir(),
        cfg.vocab_size,
        SpecialIds {
            bos: cfg.bos_token_id,
            eos: cfg.eos_token_id,
            pad: cfg.pad_token_id,
        },
    )?;
    let planned = tensors::plan(&ckpt, plan.ty)?;
    let fallbacks: Vec<String> = planned.iter().filter_map(|p| p.fallback.clone()).collect();
    let id = ckpt.compute_id();
    let default_name = plan
        .source
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let meta = metadata::build(&metadata::MetaInputs {
        name: plan.name.as_deref().unwrap_or(&default_name),
        ty: plan.ty,
        config: cfg,
        vocab: &vocab,
        id: &id,
        provenance: ckpt.provenance.as_ref(),
        fallbacks: &fallbacks,
    });

    let staging = StagingFile::create(&plan.output, plan.force)?;
    let tmp = staging.path().to_path_buf();
    let werr = |e: GgufWriteError| match e {
        GgufWriteError::Io(io) => Error::io("write", &tmp, io),
        other => Error::format("GGUF output", &plan.output, "writer", other.to_string()),
    };
    let sink = BufWriter::with_capacity(1 << 20, staging.file());
    let mut w = GgufWriter::new(
        sink,
        &meta,
        planned.iter().map(|p| p.plan.clone()).collect(),
    )
    .map_err(werr)?;
    let mut reports = Vec::with_capacity(planned.len());
    for p in &planned {
        let (bytes, st) = tensors::encode(&ckpt, p)?;
        w.write_tensor(&p.plan.name, &bytes).map_err(werr)?;
        reports.push(report(p, st));
    }
    let sink = w.finish().map_err(werr)?;
    sink.into_inner()
        .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
    let bytes = std::fs::metadata(&tmp)
        .map_err(|e| Error::io("stat", &tmp, e))?
        .len();
    let blake3 = crate::checkpoint::hash_file(&tmp)?;
    let output = staging.commit()?;
    Ok(ExportOutcome {
        output,
        id,
        ty: plan.ty.name().into(),
        bytes,
        blake3,
        tensors: reports,
        seconds: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    })
}

fn report(p: &tensors::Planned, st: QuantStats) -> TensorReport {
    TensorReport {
        name: p.plan.name.clone(),
        source: p.hf.clone(),
        ty: p.plan.ggml_type.name().into(),
        blocks: st.blocks,
        lossless_blocks: st.lossless_blocks,
        grid_blocks: st.grid_blocks,
        max_abs_err: st.max_abs_err,
        fallback: p.fallback.clone(),
    }
}
