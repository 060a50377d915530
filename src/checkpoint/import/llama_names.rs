//! llama.cpp's tensor names for the `llama` architecture and their Hugging Face names, and
//! the inverse of the Q/K row permutation llama.cpp's converter applies for its adjacent-pair
//! rope (DESIGN.md, "The default model").

/// Maps a GGUF tensor name to its Hugging Face name, or `None` when it is not a llama weight.
pub fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = suffix.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Maps a Hugging Face llama tensor name to llama.cpp's, or `None` when llama.cpp's `llama`
/// architecture has no such tensor (the inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    let top = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = suffix.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// llama.cpp's converter permutation of Q or K rows (`LlamaModel.permute` in
/// convert_hf_to_gguf.py): `w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)`,
/// the inverse of [`unpermute_rows`]. Works for a bias too (`cols` = 1).
pub fn permute_rows(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = values.len() / cols;
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let src = h * head_dim + j * half + i;
                let dst = h * head_dim + i * 2 + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Undoes llama.cpp's permutation of Q or K rows. Within each head, llama.cpp interleaved the
/// two rotary halves (row order i0 j0, i0 j1, i1 j0, ...); HF's `rotate_half` wants the halves
/// contiguous. `hf = gguf.reshape(heads, hd/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
/// Works for a bias too (`cols` = 1).
pub fn unpermute_rows(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = values.len() / cols;
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + i * 2 + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_for_every_llama_module() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.3.attn_k.bias").unwrap(),
            "model.layers.3.self_attn.k_proj.bias"
        );
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert!(hf_name("rope_freqs.weight").is_none());
        assert!(hf_name("blk.x.attn_q.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        // The converter's permutation: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).
        let (heads, hd, cols) = (3, 8, 5);
        let hf: Vec<f32> = (0..heads * hd * cols)
            .map(|x| x as f32 * 0.5 - 7.0)
            .collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = h * hd + j * (hd / 2) + i;
                    let dst = h * hd + i * 2 + j;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_ne!(gguf, hf);
        assert_eq!(unpermute_rows(&gguf, heads, cols), hf);
        assert_eq!(permute_rows(&hf, heads, cols), gguf);
        assert_eq!(
            permute_rows(&unpermute_rows(&gguf, heads, 1), heads, 1),
            gguf
        );
    }

    #[test]
    fn gguf_name_inverts_hf_name() {
        for g in [
            "token_embd.weight",
            "output_norm.weight",
            "output.weight",
            "blk.0.attn_norm.weight",
            "blk.7.ffn_norm.weight",
            "blk.11.attn_q.weight",
            "blk.11.attn_q.bias",
            "blk.2.attn_k.weight",
            "blk.2.attn_v.bias",
            "blk.2.attn_output.weight",
            "blk.3.ffn_gate.weight",
            "blk.3.ffn_up.weight",
            "blk.3.ffn_down.bias",
        ] {
            let hf = hf_name(g).unwrap();
            assert_eq!(gguf_name(&hf).as_deref(), Some(g), "{hf}");
        }
        assert!(gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq").is_none());
        assert!(gguf_name("model.layers.x.mlp.up_proj.weight").is_none());
    }
}
