//! The calibration pipeline against direct computations on the tiny fixture: layer 0's
//! q/k/v Hessian from the walk equals `(2/N)·Σ xxᵀ` of the RMS-normed embeddings computed here
//! in f64, and the activations the walk hands to layer 1 equal the full forward's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use intervene::checkpoint::Checkpoint;
use intervene::interventions::compress::pipeline::{collect_stats, forward_all, Activations};
use intervene::interventions::compress::plan::Method;
use intervene::interventions::compress::solve::InputStats;
use intervene::model::names::Proj;
use intervene::model::{DecoderLayer, Hooks, LayerContext, Llama, Logits};

fn windows() -> Vec<Vec<u32>> {
    (0..5u32)
        .map(|s| (0..12u32).map(|t| (s * 37 + t * 11 + 3) % 211).collect())
        .collect()
}

#[test]
fn first_layer_hessian_equals_direct_computation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let cfg = ckpt.config.clone();
    let c = cfg.hidden_size;
    let ctx = LayerContext::new(&cfg);
    let win = windows();
    // Chunks of 2 sequences: the running average over uneven batches must still be exact.
    let mut acts = Activations::embed(&ckpt, &win, 2).unwrap();
    let layer0 = DecoderLayer::load(&ckpt, 0).unwrap();
    let mut stats = BTreeMap::new();
    stats.insert(Proj::Q, InputStats::new(Method::Gptq, c));
    collect_stats(&ctx, &layer0, &acts, &mut stats).unwrap();
    let InputStats::Hessian(h) = &stats[&Proj::Q] else {
        panic!("not a Hessian")
    };
    assert_eq!(h.nsamples(), win.len());

    // Direct: embedding rows, RMSNorm with input_layernorm's weight, H = 2/N Σ x xᵀ (f64).
    let emb = ckpt.tensor_f32("model.embed_tokens.weight").unwrap();
    let gamma = ckpt
        .tensor_f32("model.layers.0.input_layernorm.weight")
        .unwrap();
    let eps = cfg.rms_norm_eps;
    let mut direct = vec![0f64; c * c];
    for &t in win.iter().flatten() {
        let e = emb.row(t as usize);
        let ms = e.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / c as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        let x: Vec<f64> = e
            .iter()
            .zip(gamma.data())
            .map(|(&v, &g)| v as f64 * inv * g as f64)
            .collect();
        for i in 0..c {
            for j in 0..c {
                direct[i * c + j] += x[i] * x[j];
            }
        }
    }
    let scale = 2.0 / win.len() as f64;
    let max = direct.iter().fold(0f64, |m, v| m.max(v.abs())) * scale;
    for (k, (&got, &d)) in h.data().iter().zip(&direct).enumerate() {
        let want = d * scale;
        assert!(
            (got - want).abs() <= 1e-5 * max,
            "H[{}, {}] = {got}, direct {want}",
            k / c,
            k % c
        );
    }

    // The walk's hand-over to layer 1 equals the full model's layer-1 input.
    forward_all(&ctx, &layer0, &mut acts).unwrap();
    let model = Llama::load(&ckpt).unwrap();
    let hooks = Hooks {
        capture_hidden: BTreeSet::from([0]),
        stop_after_layer: Some(0),
        ..Default::default()
    };
    let full = model.forward(&win, Logits::None, &hooks).unwrap();
    assert_eq!(full.captures.hidden[&0].data(), acts.hidden.as_slice());
}
