//! A synthetic Llama model in Hugging Face layout (config.json + model.safetensors, F32, random
//! weights from a seeded generator), sized by the test: large enough that writing it takes
//! measurable time (kill test) or that matrix products split across threads (determinism).

use std::path::Path;

use serde_json::{json, Value};

pub struct Dims {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
}

impl Dims {
    pub fn config(&self) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.hidden / self.heads,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "vocab_size": self.vocab,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32"
        })
    }

    /// (name, shape) of every tensor, HF names.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden, self.intermediate, self.vocab);
        let kv = self.kv_heads * (h / self.heads);
        let mut t = vec![
            ("lm_head.weight".to_string(), vec![v, h]),
            ("model.embed_tokens.weight".to_string(), vec![v, h]),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (n, s) in [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("mlp.down_proj.weight", vec![h, i]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("self_attn.q_proj.weight", vec![h, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, h]),
            ] {
                t.push((format!("{p}.{n}"), s));
            }
        }
        t.sort();
        t
    }
}

/// Writes `dir/config.json` and `dir/model.safetensors` with uniform random weights in
/// [-0.1, 0.1) (norm weights around 1), from `seed`.
pub fn write_model(dir: &Path, dims: &Dims, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&dims.config()).unwrap(),
    )
    .unwrap();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in dims.tensors() {
        let n: usize = shape.iter().product();
        let start = data.len();
        let norm = name.ends_with("norm.weight");
        for _ in 0..n {
            let u = (next() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            let v = if norm { 0.9 + 0.2 * u } else { 0.2 * u - 0.1 };
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name,
            json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    std::fs::write(
        dir.join("model.safetensors"),
        super::join_safetensors(&Value::Object(header), &data),
    )
    .unwrap();
}

const CHARS: &str = "abcdefghijklmnopqrstuvwxyz .,";

/// A character-level tokenizer.json (BPE without merges): ids 1.. for `CHARS`, 0 unknown.
pub fn char_tokenizer() -> Value {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), json!(0));
    for (i, c) in CHARS.chars().enumerate() {
        vocab.insert(c.to_string(), json!(i + 1));
    }
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    })
}

/// Deterministic pseudo-text as JSON Lines: `docs` documents of about `chars` characters.
pub fn corpus(docs: usize, chars: usize, seed: u64) -> String {
    let words = [
        "the",
        "model",
        "weights",
        "are",
        "pruned",
        "and",
        "quantised",
        "layer",
        "by",
        "one",
        "with",
        "calibration",
        "text",
        "from",
        "a",
        "small",
        "corpus",
        "of",
        "words",
    ];
    let mut state = seed;
    let mut out = String::new();
    for _ in 0..docs {
        let mut doc = String::new();
        while doc.len() < chars {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            doc.push_str(words[(state >> 33) as usize % words.len()]);
            doc.push(if (state >> 20).is_multiple_of(9) {
                '.'
            } else {
                ' '
            });
        }
        out.push_str(&serde_json::to_string(&json!({ "text": doc })).unwrap());
        out.push('\n');
    }
    out
}
