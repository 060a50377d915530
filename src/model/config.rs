//! The Llama-family configuration, read from and written to Hugging Face `config.json`.
//! Covers LlamaForCausalLM and the configs that share its architecture (SmolLM, Mistral,
//! Qwen2): rope theta, `llama3` rope scaling, tied embeddings, attention bias.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The `llama3` rope-scaling parameters (Llama 3.1 and later).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub architecture: String,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 has it on q/k/v; Llama's `attention_bias` also puts one on o).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// The original JSON, so keys we do not model survive a round trip untouched.
    pub raw: Map<String, Value>,
}

const KIND: &str = "config";

fn get_usize(obj: &Map<String, Value>, path: &Path, key: &str) -> Result<usize> {
    match obj.get(key) {
        Some(Value::Number(n)) => {
            n.as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| {
                    Error::format(
                        KIND,
                        path,
                        key,
                        format!("expected a non-negative integer, got {n}"),
                    )
                })
        }
        Some(other) => Err(Error::format(
            KIND,
            path,
            key,
            format!("expected an integer, got {other}"),
        )),
        None => Err(Error::format(KIND, path, key, "missing")),
    }
}

fn get_f64(obj: &Map<String, Value>, path: &Path, key: &str) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| Error::format(KIND, path, key, "expected a finite number")),
        Some(other) => Err(Error::format(
            KIND,
            path,
            key,
            format!("expected a number, got {other}"),
        )),
    }
}

fn get_bool(obj: &Map<String, Value>, path: &Path, key: &str, default: bool) -> Result<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::format(
            KIND,
            path,
            key,
            format!("expected true or false, got {other}"),
        )),
    }
}

/// Token ids may be an integer or a list (several eos ids); the first is taken.
fn get_token_id(obj: &Map<String, Value>, path: &Path, key: &str) -> Result<Option<u32>> {
    let v = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => match a.first() {
            Some(v) => v,
            None => return Ok(None),
        },
        Some(v) => v,
    };
    v.as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .map(Some)
        .ok_or_else(|| Error::format(KIND, path, key, format!("expected a token id, got {v}")))
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        Self::from_json_bytes(&bytes, path)
    }

    /// Parses a Hugging Face `config.json`; `path` is named in every error.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::format(KIND, path, "json", e.to_string()))?;
        let Value::Object(raw) = value else {
            return Err(Error::format(KIND, path, "json", "expected a JSON object"));
        };
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llama")
            .to_string();
        const SUPPORTED: [&str; 4] = ["llama", "mistral", "qwen2", "smollm"];
        if !SUPPORTED.contains(&model_type.as_str()) {
            return Err(Error::unsupported(
                "model_type",
                path,
                format!("`{model_type}`; supported: {}", SUPPORTED.join(", ")),
            ));
        }
        let architecture = match raw.get("architectures") {
            Some(Value::Array(a)) => a
                .first()
                .and_then(Value::as_str)
                .unwrap_or("LlamaForCausalLM")
                .to_string(),
            _ => "LlamaForCausalLM".to_string(),
        };
        let hidden_size = get_usize(&raw, path, "hidden_size")?;
        let num_attention_heads = get_usize(&raw, path, "num_attention_heads")?;
        let num_key_value_heads = match raw.get("num_key_value_heads") {
            None | Some(Value::Null) => num_attention_heads,
            _ => get_usize(&raw, path, "num_key_value_heads")?,
        };
        if num_attention_heads == 0 {
            return Err(Error::format(
                KIND,
                path,
                "num_attention_heads",
                "must be at least 1",
            ));
        }
        let head_dim = match raw.get("head_dim") {
            None | Some(Value::Null) => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(Error::format(
                        KIND,
                        path,
                        "hidden_size",
                        format!("{hidden_size} is not divisible by num_attention_heads {num_attention_heads}"),
                    ));
                }
                hidden_size / num_attention_heads
            }
            _ => get_usize(&raw, path, "head_dim")?,
        };
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(Error::format(
                KIND,
                path,
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} must divide num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::format(
                KIND,
                path,
                "head_dim",
                format!("{head_dim} must be even and positive (rotary pairs)"),
            ));
        }
        // transformers >= 5 writes `rope_parameters` (with `rope_theta` inside) instead of the
        // top-level `rope_theta` and `rope_scaling`; read either, the legacy keys first.
        let rope_parameters = match raw.get("rope_parameters") {
            Some(Value::Object(rp)) => Some(rp),
            _ => None,
        };
        let rope_theta = match get_f64(&raw, path, "rope_theta")? {
            Some(t) => Some(t),
            None => match rope_parameters {
                Some(rp) => get_f64(rp, path, "rope_theta")?,
                None => None,
            },
        };
        let rope_scaling_value = match raw.get("rope_scaling") {
            None | Some(Value::Null) => raw.get("rope_parameters"),
            some => some,
        };
        let rope_scaling = match rope_scaling_value {
            None | Some(Value::Null) => None,
            Some(Value::Object(rs)) => {
                let kind = rs
                    .get("rope_type")
                    .or_else(|| rs.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match kind {
                    "llama3" => {
                        let f = |k: &str| -> Result<f64> {
                            get_f64(rs, path, k)?.ok_or_else(|| {
                                Error::format(KIND, path, format!("rope_scaling.{k}"), "missing")
                            })
                        };
                        Some(Llama3RopeScaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: get_usize(
                                rs,
                                path,
                                "original_max_position_embeddings",
                            )?,
                        })
                    }
                    "default" => None,
                    other => {
                        return Err(Error::unsupported(
                            "rope_scaling",
                            path,
                            format!("type `{other}`; supported: llama3"),
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(Error::format(
                    KIND,
                    path,
                    "rope_scaling",
                    format!("expected an object, got {other}"),
                ))
            }
        };
        let is_qwen2 = model_type == "qwen2";
        let attention_bias = get_bool(&raw, path, "attention_bias", false)?;
        let cfg = LlamaConfig {
            architecture,
            vocab_size: get_usize(&raw, path, "vocab_size")?,
            hidden_size,
            intermediate_size: get_usize(&raw, path, "intermediate_size")?,
            num_hidden_layers: get_usize(&raw, path, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64(&raw, path, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10000.0),
            rope_scaling,
            max_position_embeddings: match raw.get("max_position_embeddings") {
                None | Some(Value::Null) => 2048,
                _ => get_usize(&raw, path, "max_position_embeddings")?,
            },
            tie_word_embeddings: get_bool(&raw, path, "tie_word_embeddings", false)?,
            qkv_bias: is_qwen2 || attention_bias,
            o_bias: attention_bias && !is_qwen2,
            mlp_bias: get_bool(&raw, path, "mlp_bias", false)?,
            bos_token_id: get_token_id(&raw, path, "bos_token_id")?,
            eos_token_id: get_token_id(&raw, path, "eos_token_id")?,
            pad_token_id: get_token_id(&raw, path, "pad_token_id")?,
            model_type,
            raw,
        };
        for (key, v) in [
            ("vocab_size", cfg.vocab_size),
            ("hidden_size", cfg.hidden_size),
            ("intermediate_size", cfg.intermediate_size),
            ("num_hidden_layers", cfg.num_hidden_layers),
        ] {
            if v == 0 {
                return Err(Error::format(KIND, path, key, "must be at least 1"));
            }
        }
        // Written as negations so that NaN (which compares false) is refused too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(cfg.rms_norm_eps > 0.0) || !(cfg.rope_theta > 0.0) {
            return Err(Error::format(
                KIND,
                path,
                "rms_norm_eps/rope_theta",
                "must be positive",
            ));
        }
        Ok(cfg)
    }

    /// The Hugging Face `config.json` for this configuration: the original keys kept, ours
    /// written over them, so transformers loads the directory as is.
    pub fn to_hf_json(&self) -> Value {
        let mut obj = self.raw.clone();
        let mut set = |k: &str, v: Value| {
            obj.insert(k.to_string(), v);
        };
        set("architectures", json!([self.architecture]));
        set("model_type", json!(self.model_type));
        set("vocab_size", json!(self.vocab_size));
        set("hidden_size", json!(self.hidden_size));
        set("intermediate_size", json!(self.intermediate_size));
        set("num_hidden_layers", json!(self.num_hidden_layers));
        set("num_attention_heads", json!(self.num_attention_heads));
        set("num_key_value_heads", json!(self.num_key_value_heads));
        set("head_dim", json!(self.head_dim));
        set("rms_norm_eps", json!(self.rms_norm_eps));
        set("rope_theta", json!(self.rope_theta));
        set(
            "max_position_embeddings",
            json!(self.max_position_embeddings),
        );
        set("tie_word_embeddings", json!(self.tie_word_embeddings));
        set("hidden_act", json!("silu"));
        if self.model_type != "qwen2" {
            set("attention_bias", json!(self.qkv_bias));
            set("mlp_bias", json!(self.mlp_bias));
        }
        if let Some(rs) = &self.rope_scaling {
            set(
                "rope_scaling",
                json!({
                    "rope_type": "llama3",
                    "factor": rs.factor,
                    "low_freq_factor": rs.low_freq_factor,
                    "high_freq_factor": rs.high_freq_factor,
                    "original_max_position_embeddings": rs.original_max_position_embeddings,
                }),
            );
        }
        for (k, v) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = v {
                set(k, json!(id));
            }
        }
        Value::Object(obj)
    }

    /// The group size of grouped-query attention: query heads per key/value head.
    pub fn gqa_group(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Every tensor the model needs, with its shape, in Hugging Face names.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let mut out = vec![
            ("model.embed_tokens.weight".to_string(), vec![v, h]),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        for l in 0..self.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("input_layernorm.weight"), vec![h]));
            out.push((p("post_attention_layernorm.weight"), vec![h]));
            out.push((p("self_attn.q_proj.weight"), vec![q, h]));
            out.push((p("self_attn.k_proj.weight"), vec![kv, h]));
            out.push((p("self_attn.v_proj.weight"), vec![kv, h]));
            out.push((p("self_attn.o_proj.weight"), vec![h, q]));
            if self.qkv_bias {
                out.push((p("self_attn.q_proj.bias"), vec![q]));
                out.push((p("self_attn.k_proj.bias"), vec![kv]));
                out.push((p("self_attn.v_proj.bias"), vec![kv]));
            }
            if self.o_bias {
                out.push((p("self_attn.o_proj.bias"), vec![h]));
            }
            out.push((p("mlp.gate_proj.weight"), vec![i, h]));
            out.push((p("mlp.up_proj.weight"), vec![i, h]));
            out.push((p("mlp.down_proj.weight"), vec![h, i]));
            if self.mlp_bias {
                out.push((p("mlp.gate_proj.bias"), vec![i]));
                out.push((p("mlp.up_proj.bias"), vec![i]));
                out.push((p("mlp.down_proj.bias"), vec![h]));
            }
        }
        out
    }
}
