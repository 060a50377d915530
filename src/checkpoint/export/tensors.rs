//! Which tensors an export writes, under which llama.cpp name, in which ggml type, and how each
//! is turned into bytes (Q/K rows permuted for llama.cpp's rope, then encoded).

use crate::checkpoint::gguf::dequant::{self, QuantStats};
use crate::checkpoint::gguf::writer::TensorPlan;
use crate::checkpoint::gguf::GgmlType;
use crate::checkpoint::import::{gguf_name, permute_rows};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::LlamaConfig;

use super::ExportType;

/// One tensor of the export.
#[derive(Clone, Debug)]
pub(super) struct Planned {
    pub hf: String,
    pub plan: TensorPlan,
    /// Heads to permute Q/K rows over.
    pub permute_heads: Option<usize>,
    /// Why the tensor is not in the requested type (1-D tensors stay F32 without a note).
    pub fallback: Option<String>,
}

/// llama.cpp's order: embeddings, the blocks in order, then the output norm and head.
fn order_key(gguf: &str) -> (u8, usize, String) {
    if gguf.starts_with("token_embd") {
        return (0, 0, gguf.into());
    }
    if let Some(rest) = gguf.strip_prefix("blk.") {
        let layer = rest
            .split('.')
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        return (1, layer, gguf.into());
    }
    (2, 0, gguf.into())
}

pub(super) fn plan(ckpt: &Checkpoint, ty: ExportType) -> Result<Vec<Planned>> {
    let cfg: &LlamaConfig = &ckpt.config;
    let mut out = Vec::new();
    for (hf, shape) in cfg.expected_tensors() {
        let gguf = gguf_name(&hf)
            .ok_or_else(|| Error::tensor(ckpt.dir(), &hf, "has no llama.cpp `llama` equivalent"))?;
        let permute_heads = if hf.contains("self_attn.q_proj") {
            Some(cfg.num_attention_heads)
        } else if hf.contains("self_attn.k_proj") {
            Some(cfg.num_key_value_heads)
        } else {
            None
        };
        // ggml dims are the HF shape reversed: ne[0] is the row length.
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let (ggml_type, fallback) = if shape.len() == 1 {
            // llama.cpp keeps norms and biases in F32 (its quantiser skips 1-D tensors).
            (GgmlType::F32, None)
        } else {
            let want = ty.ggml_type();
            let row = dims[0] as usize;
            if row.is_multiple_of(want.block_size()) {
                (want, None)
            } else {
                // As llama-quantize: a row that is not a whole number of blocks goes to F16.
                let why = format!(
                    "{gguf}: F16 (row length {row} is not a multiple of the {want} block size {})",
                    want.block_size()
                );
                (GgmlType::F16, Some(why))
            }
        };
        out.push(Planned {
            hf,
            plan: TensorPlan {
                name: gguf,
                dims,
                ggml_type,
            },
            permute_heads,
            fallback,
        });
    }
    out.sort_by_key(|p| order_key(&p.plan.name));
    Ok(out)
}

/// The bytes of one planned tensor, and what encoding it lost.
pub(super) fn encode(ckpt: &Checkpoint, p: &Planned) -> Result<(Vec<u8>, QuantStats)> {
    let t = ckpt.tensor_f32(&p.hf)?;
    let cols = if t.shape().len() > 1 { t.shape()[1] } else { 1 };
    let mut values = t.into_data();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::tensor(
            ckpt.dir(),
            &p.hf,
            format!("non-finite value at element {i}; not exported"),
        ));
    }
    if let Some(heads) = p.permute_heads {
        values = permute_rows(&values, heads, cols);
    }
    dequant::quantize(p.plan.ggml_type, &values)
        .map_err(|e| Error::tensor(ckpt.dir(), &p.hf, e.to_string()))
}
