//! Hooks: what a forward pass should record or change on the way, for the interventions
//! (ROME/MEMIT read linear inputs and add vectors to the MLP output; RMU and MEMIT read the
//! residual stream; GPTQ/AWQ/SparseGPT read every linear's input; many stop early).
//!
//! Rows. A batch is packed without padding: sequence b's tokens are rows
//! `offsets[b]..offsets[b+1]` of every captured tensor (`ForwardOutput::offsets`).
//!
//! Order inside layer l: the MLP-output deltas are added with the MLP output, then the
//! residual deltas after the layer, then the hidden state after layer l is captured (so a
//! capture shows what the next layer reads), then the pass stops if `stop_after_layer == l`.

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::Tensor;
use crate::error::{Error, Result};

use super::names::{parse_linear, LinearModule, Proj};
use super::LlamaConfig;

/// Where a delta vector is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaSite {
    /// The residual stream leaving layer l (the hidden state after layer l).
    Residual,
    /// The output of layer l's MLP (`down_proj`, bias included), before the residual add.
    MlpOutput,
}

/// Adds `vector` (`[hidden_size]`) at one token: sequence `seq` of the batch, position `pos`.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    pub site: DeltaSite,
    pub layer: usize,
    pub seq: usize,
    pub pos: usize,
    pub vector: Vec<f32>,
}

/// What to capture or change during `Llama::forward`. The default does nothing.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Linear modules (Hugging Face names without `.weight`, such as
    /// `model.layers.3.mlp.down_proj` or `lm_head`) whose input is captured as `[rows, in]`.
    pub capture_linear_inputs: BTreeSet<String>,
    /// Layers whose residual-stream output (hidden state after layer l, before the final
    /// norm) is captured as `[rows, hidden_size]`.
    pub capture_hidden: BTreeSet<usize>,
    /// Vectors added on the way (see the module notes for the order).
    pub deltas: Vec<Delta>,
    /// Run layers `0..=l` only: no final norm, no LM head; `ForwardOutput::hidden` holds the
    /// residual stream after layer l.
    pub stop_after_layer: Option<usize>,
}

/// What a forward pass captured, keyed as requested.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Captures {
    pub linear_inputs: BTreeMap<String, Tensor>,
    pub hidden: BTreeMap<usize, Tensor>,
}

/// The points where linear inputs are observable (q/k/v share one input, as do gate/up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tap {
    /// The input of q/k/v: the attention norm's output.
    Attn,
    /// The input of o_proj: the attention heads' output.
    O,
    /// The input of gate/up: the MLP norm's output.
    Mlp,
    /// The input of down_proj: the SwiGLU activation.
    Down,
}

/// Hooks resolved against a config and a batch: per layer, what to do, in row indices.
#[derive(Debug, Default)]
pub(crate) struct LayerPlan<'a> {
    pub taps: Vec<(Tap, &'a str)>,
    pub capture_hidden: bool,
    pub mlp_deltas: Vec<(usize, &'a [f32])>,
    pub residual_deltas: Vec<(usize, &'a [f32])>,
}

#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    pub layers: Vec<LayerPlan<'a>>,
    pub lm_head_input: Option<&'a str>,
    /// Layers to run: all, or `0..=stop`.
    pub run_layers: usize,
    pub stopped: bool,
}

impl Hooks {
    /// True when the hooks ask for nothing.
    pub fn is_empty(&self) -> bool {
        self.capture_linear_inputs.is_empty()
            && self.capture_hidden.is_empty()
            && self.deltas.is_empty()
            && self.stop_after_layer.is_none()
    }

    /// Checks every name, layer, sequence, position and vector length against the model and
    /// the batch (`lens[b]` tokens in sequence b, packed from `offsets[b]`). Errors name the
    /// hook at fault.
    pub(crate) fn plan<'a>(
        &'a self,
        config: &LlamaConfig,
        lens: &[usize],
        offsets: &[usize],
    ) -> Result<Plan<'a>> {
        let n_layers = config.num_hidden_layers;
        let layer_ok = |what: &str, l: usize| {
            if l < n_layers {
                Ok(())
            } else {
                Err(Error::usage(
                    what,
                    format!("layer {l} out of range (the model has {n_layers} layers)"),
                ))
            }
        };
        let run_layers = match self.stop_after_layer {
            Some(l) => {
                layer_ok("hooks.stop_after_layer", l)?;
                l + 1
            }
            None => n_layers,
        };
        let mut plan = Plan {
            layers: (0..n_layers).map(|_| LayerPlan::default()).collect(),
            lm_head_input: None,
            run_layers,
            stopped: self.stop_after_layer.is_some(),
        };
        for name in &self.capture_linear_inputs {
            let bad = || {
                Error::usage(
                    "hooks.capture_linear_inputs",
                    format!("`{name}` is not a linear module (e.g. `model.layers.0.mlp.down_proj`, `lm_head`)"),
                )
            };
            match parse_linear(name).ok_or_else(bad)? {
                LinearModule::LmHead => plan.lm_head_input = Some(name),
                LinearModule::Layer(l, p) => {
                    layer_ok("hooks.capture_linear_inputs", l)?;
                    let tap = match p {
                        Proj::Q | Proj::K | Proj::V => Tap::Attn,
                        Proj::O => Tap::O,
                        Proj::Gate | Proj::Up => Tap::Mlp,
                        Proj::Down => Tap::Down,
                    };
                    plan.layers[l].taps.push((tap, name));
                }
            }
        }
        for &l in &self.capture_hidden {
            layer_ok("hooks.capture_hidden", l)?;
            plan.layers[l].capture_hidden = true;
        }
        for (i, d) in self.deltas.iter().enumerate() {
            let what = format!("hooks.deltas[{i}]");
            layer_ok(&what, d.layer)?;
            let len = *lens.get(d.seq).ok_or_else(|| {
                Error::usage(
                    &what,
                    format!("sequence {} out of range (batch of {})", d.seq, lens.len()),
                )
            })?;
            if d.pos >= len {
                return Err(Error::usage(
                    &what,
                    format!(
                        "position {} out of range (sequence {} has {len} tokens)",
                        d.pos, d.seq
                    ),
                ));
            }
            if d.vector.len() != config.hidden_size {
                return Err(Error::usage(
                    &what,
                    format!(
                        "vector of {} values, expected hidden_size {}",
                        d.vector.len(),
                        config.hidden_size
                    ),
                ));
            }
            let row = offsets[d.seq] + d.pos;
            let lp = &mut plan.layers[d.layer];
            match d.site {
                DeltaSite::Residual => lp.residual_deltas.push((row, &d.vector)),
                DeltaSite::MlpOutput => lp.mlp_deltas.push((row, &d.vector)),
            }
        }
        Ok(plan)
    }
}
