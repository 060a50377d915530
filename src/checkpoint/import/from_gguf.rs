//! GGUF -> checkpoint: config from the `llama.*` metadata, tokenizer from `tokenizer.ggml.*`,
//! tensors dequantised one at a time (peak memory: one tensor plus the map), renamed to
//! Hugging Face names, Q/K rows un-permuted, and streamed to the writer in name order.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::llama_names::{hf_name, unpermute_rows};
use super::{elapsed, import_provenance, ImportOutcome, ImportPlan};
use crate::checkpoint::gguf::{GgmlType, GgufFile, GgufTensorInfo, GgufValue};
use crate::checkpoint::{
    hash_file, pretty_json, write_checkpoint, CheckpointFiles, DType, InputFile, TensorSpec,
};
use crate::error::{Error, Result};
use crate::model::LlamaConfig;
use crate::tokenizer::{
    generation_config, tokenizer_config_from_gguf, tokenizer_json_from_gguf, GgufVocab,
};

const KIND: &str = "GGUF file";

/// Architectures whose GGUF tensors follow llama.cpp's `llama` naming and permutation.
const SUPPORTED_ARCHS: [&str; 1] = ["llama"];

pub fn import_gguf(plan: &ImportPlan) -> Result<ImportOutcome> {
    let start = Instant::now();
    crate::checkpoint::check_output_path(&plan.output, plan.force)?;
    let src = &plan.source;
    let gguf = GgufFile::open(src)?;
    let arch = meta_str(&gguf, "general.architecture")?;
    if !SUPPORTED_ARCHS.contains(&arch) {
        return Err(Error::unsupported(
            "architecture",
            src,
            format!(
                "general.architecture `{arch}`; supported: {}",
                SUPPORTED_ARCHS.join(", ")
            ),
        ));
    }
    let vocab = read_vocab(&gguf)?;
    let config = config_from_metadata(&gguf, arch, &vocab)?;
    let tensors = map_tensors(&gguf, &config)?;
    let dtype = plan.dtype.unwrap_or_else(|| default_dtype(&tensors));

    let tokenizer = tokenizer_json_from_gguf(&vocab, src)?;
    let files = CheckpointFiles {
        config: pretty_json(&with_torch_dtype(config.to_hf_json(), dtype)),
        tokenizer: Some(pretty_json(&tokenizer)),
        tokenizer_config: Some(pretty_json(&tokenizer_config_from_gguf(
            &vocab,
            Some(config.max_position_embeddings as u64),
        ))),
        generation_config: Some(pretty_json(&generation_config(
            vocab.bos_id,
            vocab.eos_id,
            vocab.pad_id,
        ))),
    };
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, t)| TensorSpec {
            name: name.clone(),
            dtype,
            shape: t.info.hf_shape(),
        })
        .collect();
    let source_hash = hash_file(src)?;
    let id = write_checkpoint(
        &plan.output,
        plan.force,
        specs,
        |spec| {
            let t = &tensors[&spec.name];
            let mut values = gguf.dequantize(t.info)?;
            if let Some(heads) = t.unpermute_heads {
                let cols = if t.info.dims.len() > 1 {
                    t.info.dims[0] as usize
                } else {
                    1
                };
                values = unpermute_rows(&values, heads, cols);
            }
            if let Some((i, _)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::tensor(
                    src,
                    &t.info.name,
                    format!("non-finite value at element {i}"),
                ));
            }
            Ok(Cow::Owned(dtype.from_f32(&values)))
        },
        &files,
        |id| {
            let params = json!({
                "source_format": "gguf",
                "gguf_version": gguf.version(),
                "architecture": arch,
                "dtype": dtype.name(),
                "source_types": type_histogram(&tensors),
            });
            let inputs = vec![InputFile {
                role: "source".into(),
                path: src.display().to_string(),
                blake3: source_hash.clone(),
            }];
            import_provenance(params, inputs, id, start)
        },
    )?;
    Ok(ImportOutcome {
        id,
        output: plan.output.clone(),
        tensors: tensors.len(),
        dtype,
        seconds: elapsed(start),
    })
}

struct MappedTensor<'a> {
    info: &'a GgufTensorInfo,
    /// Heads to un-permute Q/K rows over, for attn_q / attn_k.
    unpermute_heads: Option<usize>,
}

fn meta_str<'a>(g: &'a GgufFile, key: &str) -> Result<&'a str> {
    g.get(key)
        .ok_or_else(|| Error::format(KIND, g.path(), key, "missing"))?
        .as_str()
        .ok_or_else(|| Error::format(KIND, g.path(), key, "expected a string"))
}

fn meta_u64(g: &GgufFile, key: &str) -> Result<Option<u64>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::format(
                KIND,
                g.path(),
                key,
                format!("expected a non-negative integer, got {}", v.type_name()),
            )
        }),
    }
}

fn meta_f64(g: &GgufFile, key: &str) -> Result<Option<f64>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            Error::format(
                KIND,
                g.path(),
                key,
                format!("expected a number, got {}", v.type_name()),
            )
        }),
    }
}

fn required_u64(g: &GgufFile, key: &str) -> Result<u64> {
    meta_u64(g, key)?.ok_or_else(|| Error::format(KIND, g.path(), key, "missing"))
}

fn config_from_metadata(g: &GgufFile, arch: &str, vocab: &GgufVocab) -> Result<LlamaConfig> {
    let k = |s: &str| format!("{arch}.{s}");
    if g.tensor("rope_freqs.weight").is_some() || g.get(&k("rope.scaling.type")).is_some() {
        // llama.cpp stores Llama 3.1's rope scaling as a per-frequency factor tensor, not as
        // the four parameters transformers needs; recovering them exactly is not implemented.
        return Err(Error::unsupported(
            "rope scaling",
            g.path(),
            "this GGUF carries rope scaling (`rope_freqs.weight` or `rope.scaling.type`); import the Hugging Face checkpoint instead",
        ));
    }
    let heads = required_u64(g, &k("attention.head_count"))?;
    let hidden = required_u64(g, &k("embedding_length"))?;
    let kv_heads = meta_u64(g, &k("attention.head_count_kv"))?.unwrap_or(heads);
    let vocab_size = match meta_u64(g, &k("vocab_size"))? {
        Some(v) => v,
        None => vocab.tokens.len() as u64,
    };
    let mut obj = Map::new();
    obj.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    obj.insert("model_type".into(), json!("llama"));
    obj.insert("vocab_size".into(), json!(vocab_size));
    obj.insert("hidden_size".into(), json!(hidden));
    obj.insert(
        "intermediate_size".into(),
        json!(required_u64(g, &k("feed_forward_length"))?),
    );
    obj.insert(
        "num_hidden_layers".into(),
        json!(required_u64(g, &k("block_count"))?),
    );
    obj.insert("num_attention_heads".into(), json!(heads));
    obj.insert("num_key_value_heads".into(), json!(kv_heads));
    if let Some(hd) =
        meta_u64(g, &k("attention.key_length"))?.or(meta_u64(g, &k("rope.dimension_count"))?)
    {
        obj.insert("head_dim".into(), json!(hd));
    }
    obj.insert(
        "rms_norm_eps".into(),
        json!(f32_as_shortest(
            meta_f64(g, &k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5)
        )),
    );
    obj.insert(
        "rope_theta".into(),
        json!(f32_as_shortest(
            meta_f64(g, &k("rope.freq_base"))?.unwrap_or(10000.0)
        )),
    );
    obj.insert(
        "max_position_embeddings".into(),
        json!(meta_u64(g, &k("context_length"))?.unwrap_or(2048)),
    );
    obj.insert(
        "tie_word_embeddings".into(),
        json!(g.tensor("output.weight").is_none()),
    );
    let bias = g.tensors().iter().any(|t| t.name.ends_with("attn_q.bias"));
    obj.insert("attention_bias".into(), json!(bias));
    obj.insert("mlp_bias".into(), json!(false));
    for (key, id) in [
        ("bos_token_id", vocab.bos_id),
        ("eos_token_id", vocab.eos_id),
        ("pad_token_id", vocab.pad_id),
    ] {
        if let Some(id) = id {
            obj.insert(key.into(), json!(id));
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(obj)).expect("json");
    // Field names in any error are config.json's; the path says where the values came from.
    let cfg = LlamaConfig::from_json_bytes(&bytes, g.path())?;
    if let Some(rope_dims) = meta_u64(g, &k("rope.dimension_count"))? {
        if rope_dims as usize != cfg.head_dim {
            return Err(Error::unsupported(
                "partial rotary",
                g.path(),
                format!(
                    "{arch}.rope.dimension_count {rope_dims} differs from head_dim {}",
                    cfg.head_dim
                ),
            ));
        }
    }
    Ok(cfg)
}

/// GGUF stores f32; printing the f32 value as the shortest f64 that round-trips avoids writing
/// `9.999999747378752e-06` for 1e-5 into config.json while keeping the same f32.
fn f32_as_shortest(v: f64) -> f64 {
    let s = format!("{}", v as f32);
    s.parse().unwrap_or(v)
}

fn with_torch_dtype(mut v: Value, dtype: DType) -> Value {
    if let Value::Object(o) = &mut v {
        o.insert("torch_dtype".into(), json!(dtype.torch_name()));
    }
    v
}

/// Maps every GGUF tensor to its HF name and checks it against the config: unknown tensors,
/// missing tensors and shape disagreements are refused by name.
fn map_tensors<'a>(
    g: &'a GgufFile,
    cfg: &LlamaConfig,
) -> Result<BTreeMap<String, MappedTensor<'a>>> {
    let mut out = BTreeMap::new();
    for info in g.tensors() {
        let Some(name) = hf_name(&info.name) else {
            return Err(Error::unsupported(
                "tensor",
                g.path(),
                format!("`{}` has no Hugging Face llama equivalent", info.name),
            ));
        };
        let unpermute_heads = if name.contains("self_attn.q_proj") {
            Some(cfg.num_attention_heads)
        } else if name.contains("self_attn.k_proj") {
            Some(cfg.num_key_value_heads)
        } else {
            None
        };
        if out
            .insert(
                name.clone(),
                MappedTensor {
                    info,
                    unpermute_heads,
                },
            )
            .is_some()
        {
            return Err(Error::tensor(
                g.path(),
                &info.name,
                "maps to a name that is already taken",
            ));
        }
    }
    let expected: BTreeMap<String, Vec<usize>> = cfg.expected_tensors().into_iter().collect();
    for (name, shape) in &expected {
        let Some(t) = out.get(name) else {
            return Err(Error::tensor(
                g.path(),
                name,
                "missing (the metadata's architecture needs it)",
            ));
        };
        if &t.info.hf_shape() != shape {
            return Err(Error::tensor(
                g.path(),
                &t.info.name,
                format!(
                    "shape {:?} (HF order) disagrees with the metadata, which implies {shape:?}",
                    t.info.hf_shape()
                ),
            ));
        }
    }
    if let Some(extra) = out.keys().find(|n| !expected.contains_key(*n)) {
        return Err(Error::tensor(
            g.path(),
            extra,
            "not part of the architecture the metadata describes",
        ));
    }
    Ok(out)
}

/// Quantised sources are written as F32 (their dequantised values are exact there); a file of
/// F16 or BF16 matrices keeps that dtype.
fn default_dtype(tensors: &BTreeMap<String, MappedTensor<'_>>) -> DType {
    let matrices = || tensors.values().filter(|t| t.info.dims.len() == 2);
    if matrices().all(|t| t.info.ggml_type == GgmlType::F16) {
        DType::F16
    } else if matrices().all(|t| t.info.ggml_type == GgmlType::BF16) {
        DType::BF16
    } else {
        DType::F32
    }
}

fn type_histogram(tensors: &BTreeMap<String, MappedTensor<'_>>) -> Value {
    let mut h: BTreeMap<String, usize> = BTreeMap::new();
    for t in tensors.values() {
        *h.entry(format!("{:?}", t.info.ggml_type)).or_default() += 1;
    }
    json!(h)
}

/// An optional metadata array, each element converted by `convert` (absent key: empty).
fn meta_array<T>(
    g: &GgufFile,
    key: &str,
    expected: &str,
    convert: impl Fn(&GgufValue) -> Option<T>,
) -> Result<Vec<T>> {
    let Some(v) = g.get(key) else {
        return Ok(Vec::new());
    };
    let arr = v
        .as_array()
        .ok_or_else(|| Error::format(KIND, g.path(), key, "expected an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            convert(x).ok_or_else(|| {
                Error::format(
                    KIND,
                    g.path(),
                    format!("{key}[{i}]"),
                    format!("expected {expected}"),
                )
            })
        })
        .collect()
}

fn read_vocab(g: &GgufFile) -> Result<GgufVocab> {
    let path: &Path = g.path();
    let strings = |key: &str| meta_array(g, key, "a string", |v| v.as_str().map(str::to_string));
    let numbers = |key: &str| meta_array(g, key, "a number", |v| v.as_f64());
    let id = |key: &str| -> Result<Option<u32>> {
        meta_u64(g, key)?
            .map(|v| {
                u32::try_from(v).map_err(|_| Error::format(KIND, path, key, "token id too large"))
            })
            .transpose()
    };
    let flag = |key: &str| g.get(key).and_then(|v| v.as_bool());
    let tokens = strings("tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(Error::format(
            KIND,
            path,
            "tokenizer.ggml.tokens",
            "missing or empty",
        ));
    }
    Ok(GgufVocab {
        model: meta_str(g, "tokenizer.ggml.model")?.to_string(),
        pre: g
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tokens,
        token_types: numbers("tokenizer.ggml.token_type")?
            .into_iter()
            .map(|x| x as i32)
            .collect(),
        scores: numbers("tokenizer.ggml.scores")?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        merges: strings("tokenizer.ggml.merges")?,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        unk_id: id("tokenizer.ggml.unknown_token_id")?,
        pad_id: id("tokenizer.ggml.padding_token_id")?,
        add_bos: flag("tokenizer.ggml.add_bos_token"),
        add_eos: flag("tokenizer.ggml.add_eos_token"),
        add_space_prefix: flag("tokenizer.ggml.add_space_prefix"),
        chat_template: g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    })
}
