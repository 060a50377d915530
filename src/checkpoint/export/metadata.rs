//! The metadata of an exported GGUF: `general.*`, the `llama.*` hyperparameters llama.cpp's
//! loader reads (`llm_load_hparams`; keys as gguf-py `constants.py` `Keys.LLM`/`Keys.Attention`/
//! `Keys.Rope`), the tokenizer (`tokenizer.ggml.*`), and the checkpoint's chain under
//! `intervene.*`.

use crate::checkpoint::gguf::GgufValue as V;
use crate::checkpoint::Provenance;
use crate::model::LlamaConfig;
use crate::tokenizer::GgufVocab;

use super::ExportType;

/// Everything the metadata is built from.
pub(super) struct MetaInputs<'a> {
    pub name: &'a str,
    pub ty: ExportType,
    pub config: &'a LlamaConfig,
    pub vocab: &'a GgufVocab,
    pub id: &'a str,
    pub provenance: Option<&'a Provenance>,
    /// "gguf tensor: reason" for each tensor written in another type than asked.
    pub fallbacks: &'a [String],
}

fn s(x: &str) -> V {
    V::String(x.to_string())
}

fn u32v(x: usize) -> V {
    V::U32(u32::try_from(x).unwrap_or(u32::MAX))
}

fn strings<'a>(xs: impl IntoIterator<Item = &'a str>) -> V {
    V::Array(xs.into_iter().map(s).collect())
}

pub(super) fn build(m: &MetaInputs) -> Vec<(String, V)> {
    let c = m.config;
    let mut out: Vec<(String, V)> = Vec::new();
    let mut put = |k: &str, v: V| out.push((k.to_string(), v));
    put("general.architecture", s("llama"));
    put("general.type", s("model"));
    put("general.name", s(m.name));
    put("general.file_type", V::U32(m.ty.file_type()));
    put("general.quantization_version", V::U32(2));

    put("llama.vocab_size", u32v(c.vocab_size));
    put("llama.context_length", u32v(c.max_position_embeddings));
    put("llama.embedding_length", u32v(c.hidden_size));
    put("llama.block_count", u32v(c.num_hidden_layers));
    put("llama.feed_forward_length", u32v(c.intermediate_size));
    put("llama.attention.head_count", u32v(c.num_attention_heads));
    put("llama.attention.head_count_kv", u32v(c.num_key_value_heads));
    put("llama.attention.key_length", u32v(c.head_dim));
    put("llama.attention.value_length", u32v(c.head_dim));
    put("llama.rope.dimension_count", u32v(c.head_dim));
    put("llama.rope.freq_base", V::F32(c.rope_theta as f32));
    put(
        "llama.attention.layer_norm_rms_epsilon",
        V::F32(c.rms_norm_eps as f32),
    );

    let v = m.vocab;
    put("tokenizer.ggml.model", s(&v.model));
    if let Some(pre) = &v.pre {
        put("tokenizer.ggml.pre", s(pre));
    }
    put(
        "tokenizer.ggml.tokens",
        strings(v.tokens.iter().map(String::as_str)),
    );
    put(
        "tokenizer.ggml.token_type",
        V::Array(v.token_types.iter().map(|&t| V::I32(t)).collect()),
    );
    if !v.merges.is_empty() {
        put(
            "tokenizer.ggml.merges",
            strings(v.merges.iter().map(String::as_str)),
        );
    }
    for (k, id) in [
        ("tokenizer.ggml.bos_token_id", v.bos_id),
        ("tokenizer.ggml.eos_token_id", v.eos_id),
        ("tokenizer.ggml.unknown_token_id", v.unk_id),
        ("tokenizer.ggml.padding_token_id", v.pad_id),
    ] {
        if let Some(id) = id {
            put(k, V::U32(id));
        }
    }
    for (k, flag) in [
        ("tokenizer.ggml.add_bos_token", v.add_bos),
        ("tokenizer.ggml.add_eos_token", v.add_eos),
    ] {
        if let Some(b) = flag {
            put(k, V::Bool(b));
        }
    }
    if let Some(t) = &v.chat_template {
        put("tokenizer.chat_template", s(t));
    }

    // The chain, readable without JSON (ops and output ids, one entry per step), and whole.
    put("intervene.id", s(m.id));
    if let Some(p) = m.provenance {
        put(
            "intervene.chain.ops",
            strings(p.chain.iter().map(|x| x.op.as_str())),
        );
        put(
            "intervene.chain.outputs",
            strings(p.chain.iter().map(|x| x.output.as_str())),
        );
        let json = String::from_utf8(p.to_json_bytes()).unwrap_or_default();
        put("intervene.provenance", V::String(json));
    }
    put("intervene.export.type", s(m.ty.name()));
    if !m.fallbacks.is_empty() {
        put(
            "intervene.export.fallbacks",
            strings(m.fallbacks.iter().map(String::as_str)),
        );
    }
    out
}
