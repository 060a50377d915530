//! Hugging Face tensor and module names (`model.layers.3.mlp.down_proj.weight`), parsed into
//! the places they live in `Llama`'s fused buffers, and the points where a linear's input is
//! observable for hooks.

/// A linear projection of a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// The module path inside a layer, as in Hugging Face.
    pub fn module(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }
}

/// A linear module: one of a layer's projections, or the LM head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearModule {
    Layer(usize, Proj),
    LmHead,
}

/// Parses `model.layers.{l}.{proj}` or `lm_head` (no `.weight` suffix).
pub fn parse_linear(name: &str) -> Option<LinearModule> {
    if name == "lm_head" {
        return Some(LinearModule::LmHead);
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (l, module) = rest.split_once('.')?;
    let l: usize = l.parse().ok()?;
    Proj::ALL
        .into_iter()
        .find(|p| p.module() == module)
        .map(|p| LinearModule::Layer(l, p))
}

/// Where a named tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    Embed,
    LmHead,
    FinalNorm,
    AttnNorm(usize),
    MlpNorm(usize),
    Weight(usize, Proj),
    Bias(usize, Proj),
}

/// Parses a Hugging Face tensor name (with its `.weight`/`.bias` suffix).
pub fn parse_tensor(name: &str) -> Option<Site> {
    match name {
        "model.embed_tokens.weight" => return Some(Site::Embed),
        "lm_head.weight" => return Some(Site::LmHead),
        "model.norm.weight" => return Some(Site::FinalNorm),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (l, tail) = rest.split_once('.')?;
    let l: usize = l.parse().ok()?;
    match tail {
        "input_layernorm.weight" => return Some(Site::AttnNorm(l)),
        "post_attention_layernorm.weight" => return Some(Site::MlpNorm(l)),
        _ => {}
    }
    let (module, kind) = tail.rsplit_once('.')?;
    let p = Proj::ALL.into_iter().find(|p| p.module() == module)?;
    match kind {
        "weight" => Some(Site::Weight(l, p)),
        "bias" => Some(Site::Bias(l, p)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hf_names_and_rejects_others() {
        assert_eq!(
            parse_linear("model.layers.3.mlp.down_proj"),
            Some(LinearModule::Layer(3, Proj::Down))
        );
        assert_eq!(parse_linear("lm_head"), Some(LinearModule::LmHead));
        assert_eq!(parse_linear("model.layers.3.mlp.down_proj.weight"), None);
        assert_eq!(parse_linear("model.layers.x.mlp.down_proj"), None);
        assert_eq!(
            parse_tensor("model.layers.0.self_attn.q_proj.bias"),
            Some(Site::Bias(0, Proj::Q))
        );
        assert_eq!(
            parse_tensor("model.layers.12.post_attention_layernorm.weight"),
            Some(Site::MlpNorm(12))
        );
        assert_eq!(
            parse_tensor("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
    }
}
