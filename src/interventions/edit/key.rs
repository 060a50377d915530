//! Activations at the subject's last token: the key (`down_proj` input, ROME `compute_u` /
//! MEMIT `compute_ks`), the MLP output (ROME's `target_init`), the residual stream leaving a
//! layer (MEMIT's `target_init` and `cur_zs`). One forward pass per batch, stopping after the
//! layer read.

use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::model::{Hooks, Llama, Logits};

use super::prompts::LocatedPrompt;

/// `model.layers.{l}.mlp.down_proj`.
pub fn down_proj(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.down_proj")
}

fn rows_at(t: &Tensor, offsets: &[usize], prompts: &[LocatedPrompt]) -> Vec<Vec<f32>> {
    prompts
        .iter()
        .enumerate()
        .map(|(b, p)| t.row(offsets[b] + p.subject_last).to_vec())
        .collect()
}

/// The `down_proj` input of `layer` at each prompt's subject-last token (`[d_ff]` each).
pub fn keys_at(model: &Llama, layer: usize, prompts: &[LocatedPrompt]) -> Result<Vec<Vec<f32>>> {
    let name = down_proj(layer);
    let mut hooks = Hooks {
        stop_after_layer: Some(layer),
        ..Hooks::default()
    };
    hooks.capture_linear_inputs.insert(name.clone());
    let batch: Vec<&[u32]> = prompts.iter().map(|p| p.tokens.as_slice()).collect();
    let out = model.forward(&batch, Logits::None, &hooks)?;
    let t = out
        .captures
        .linear_inputs
        .get(&name)
        .ok_or_else(|| Error::Check(format!("forward did not capture `{name}`")))?;
    Ok(rows_at(t, &out.offsets, prompts))
}

/// The residual stream leaving `layer` at each prompt's subject-last token (`[hidden]`).
pub fn residual_at(
    model: &Llama,
    layer: usize,
    prompts: &[LocatedPrompt],
) -> Result<Vec<Vec<f32>>> {
    let hooks = Hooks {
        stop_after_layer: Some(layer),
        ..Hooks::default()
    };
    let batch: Vec<&[u32]> = prompts.iter().map(|p| p.tokens.as_slice()).collect();
    let out = model.forward(&batch, Logits::None, &hooks)?;
    let t = out
        .hidden
        .as_ref()
        .ok_or_else(|| Error::Check("forward returned no hidden state".into()))?;
    Ok(rows_at(t, &out.offsets, prompts))
}

/// `W_down k (+ bias)`: the MLP output for a key (Llama's MLP output is `down_proj`'s).
pub fn mlp_output(model: &Llama, layer: usize, key: &[f32]) -> Result<Vec<f32>> {
    let name = down_proj(layer);
    let w = model.weight(&format!("{name}.weight"))?;
    let (d, dff) = (w.shape()[0], w.shape()[1]);
    if key.len() != dff {
        return Err(Error::tensor(
            "<in-memory weights>",
            format!("{name}.weight"),
            format!("key of {} values, the weight takes {dff}", key.len()),
        ));
    }
    let mut out: Vec<f32> = (0..d)
        .map(|i| {
            w.data()[i * dff..(i + 1) * dff]
                .iter()
                .zip(key)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>() as f32
        })
        .collect();
    if let Ok(b) = model.weight(&format!("{name}.bias")) {
        out.iter_mut().zip(b.data()).for_each(|(o, b)| *o += b);
    }
    Ok(out)
}

/// Elementwise mean of equal-length vectors.
pub fn mean(vs: &[Vec<f32>]) -> Vec<f32> {
    let n = vs.first().map_or(0, Vec::len);
    let mut acc = vec![0f64; n];
    for v in vs {
        acc.iter_mut().zip(v).for_each(|(a, b)| *a += f64::from(*b));
    }
    let k = vs.len().max(1) as f64;
    acc.into_iter().map(|a| (a / k) as f32).collect()
}

pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use std::path::Path;

    #[test]
    fn mlp_output_of_the_captured_key_is_the_layers_mlp_output() {
        // Independent path: capture the MLP norm's output (gate/up input) and run the layer's
        // own MLP on it (`DecoderLayer::mlp_from_normed`); `W_down k` of the captured key
        // must agree.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf");
        let ckpt = Checkpoint::open(&dir).unwrap();
        let model = Llama::load(&ckpt).unwrap();
        let p = LocatedPrompt {
            tokens: vec![5, 17, 33, 90, 4],
            subject_last: 2,
        };
        for layer in 0..2 {
            let k = keys_at(&model, layer, std::slice::from_ref(&p)).unwrap();
            let m = mlp_output(&model, layer, &k[0]).unwrap();
            let mut hooks = Hooks {
                stop_after_layer: Some(layer),
                ..Hooks::default()
            };
            let gate = format!("model.layers.{layer}.mlp.gate_proj");
            hooks.capture_linear_inputs.insert(gate.clone());
            let out = model.forward(&[&p.tokens], Logits::None, &hooks).unwrap();
            let xn = out.captures.linear_inputs[&gate].row(2).to_vec();
            let dl = crate::model::DecoderLayer::load(&ckpt, layer).unwrap();
            let want = dl.mlp_from_normed(&xn);
            assert!(norm(&m) > 1e-3);
            for (i, (a, b)) in m.iter().zip(&want).enumerate() {
                // f32 sums of 77 terms against an f64-accumulated dot product.
                assert!((a - b).abs() < 1e-5, "layer {layer} [{i}]");
            }
            // The residual read at the same layer is finite and differs from the MLP part.
            let h = residual_at(&model, layer, std::slice::from_ref(&p)).unwrap();
            assert!(h[0].iter().all(|v| v.is_finite()) && h[0] != m);
        }
    }
}
