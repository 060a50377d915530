//! The forward pass against PyTorch: the tiny fixtures made by `fixtures/gen_tiny_llama.py`
//! (logits, NLLs and greedy continuations in `fixtures/tiny/golden.json`), plus the hooks
//! against a slow f64 reference forward written out here from the weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use intervene::backend::cpu::argmax::argmax;
use intervene::backend::cpu::tolerance::Tolerance;
use intervene::backend::Tensor;
use intervene::checkpoint::Checkpoint;
use intervene::model::{Delta, DeltaSite, Hooks, Llama, Logits};
use serde_json::Value;

const GOLDEN_FORMAT: &str = "intervene-forward-golden";
const GOLDEN_VERSION: u64 = 1;
const MODELS: [&str; 3] = ["hf", "hf_variant", "q8_0_dequant"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny")
}

fn golden() -> Value {
    let path = fixtures().join("golden.json");
    let hint = "regenerate with `/opt/pyref/bin/python fixtures/gen_tiny_llama.py`";
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; {hint}", path.display()));
    let g: Value = serde_json::from_slice(&bytes).expect("golden.json is JSON");
    assert_eq!(g["format"], GOLDEN_FORMAT, "golden.json format; {hint}");
    assert_eq!(g["version"], GOLDEN_VERSION, "golden.json version; {hint}");
    g
}

fn load(name: &str) -> Llama {
    let ckpt = Checkpoint::open(&fixtures().join(name)).expect("open fixture checkpoint");
    Llama::load(&ckpt).expect("load fixture model")
}

struct Case {
    tokens: Vec<u32>,
    logits: Vec<f32>,
    nll: Vec<f32>,
    greedy: Vec<u32>,
}

fn floats(v: &Value) -> Vec<f32> {
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().expect("number") as f32),
            other => panic!("expected numbers, got {other}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cases(g: &Value, model: &str) -> Vec<Case> {
    g["models"][model]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            tokens: ids(&c["tokens"]),
            logits: floats(&c["logits"]),
            nll: floats(&c["nll"]),
            greedy: ids(&c["greedy"]),
        })
        .collect()
}

const TOL: Tolerance = Tolerance::F32_FORWARD;

#[test]
fn logits_nll_and_greedy_match_pytorch() {
    let g = golden();
    for name in MODELS {
        let model = load(name);
        let cases = cases(&g, name);
        let v = model.config().vocab_size;
        for (i, case) in cases.iter().enumerate() {
            let out = model
                .forward(&[&case.tokens], Logits::All, &Hooks::default())
                .unwrap();
            let logits = out.logits.expect("logits");
            assert_eq!(logits.shape(), [case.tokens.len(), v]);
            TOL.check(
                &format!("{name} case {i} logits"),
                logits.data(),
                &case.logits,
            )
            .unwrap();
            let nll = model.sequence_nll(&case.tokens).unwrap();
            TOL.check(&format!("{name} case {i} nll"), &nll, &case.nll)
                .unwrap();
            let gen = model
                .generate_greedy(&case.tokens, case.greedy.len(), &[])
                .unwrap();
            assert_eq!(gen, case.greedy, "{name} case {i} greedy continuation");
        }
    }
}

#[test]
fn packed_batch_equals_single_runs_and_last_selection() {
    let g = golden();
    for name in MODELS {
        let model = load(name);
        let cases = cases(&g, name);
        let batch: Vec<Vec<u32>> = cases.iter().map(|c| c.tokens.clone()).collect();
        let out = model
            .forward(&batch, Logits::All, &Hooks::default())
            .unwrap();
        let last = model
            .forward(&batch, Logits::Last, &Hooks::default())
            .unwrap();
        let v = model.config().vocab_size;
        assert_eq!(last.logits.as_ref().unwrap().shape(), [batch.len(), v]);
        for (b, case) in cases.iter().enumerate() {
            let got: Vec<f32> = (0..case.tokens.len())
                .flat_map(|t| out.logits_at(b, t).unwrap().to_vec())
                .collect();
            TOL.check(&format!("{name} batch seq {b}"), &got, &case.logits)
                .unwrap();
            let t = case.tokens.len() - 1;
            TOL.check(
                &format!("{name} last seq {b}"),
                last.logits_at(b, t).unwrap(),
                &case.logits[t * v..],
            )
            .unwrap();
        }
        let batch_nll = model.batch_nll(&batch).unwrap();
        for (b, case) in cases.iter().enumerate() {
            TOL.check(&format!("{name} batch nll {b}"), &batch_nll[b], &case.nll)
                .unwrap();
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_recompute() {
    let g = golden();
    for name in MODELS {
        let model = load(name);
        for (i, case) in cases(&g, name).iter().enumerate() {
            let mut seq = case.tokens.clone();
            let mut dec = intervene::model::Decoder::new(&model, 1); // grows as fed
            let mut cached = dec.feed(&seq).unwrap().to_vec();
            for step in 0..6 {
                let full = model
                    .forward(&[&seq], Logits::Last, &Hooks::default())
                    .unwrap();
                let full = full.logits.unwrap();
                TOL.check(
                    &format!("{name} case {i} step {step}"),
                    &cached,
                    full.data(),
                )
                .unwrap();
                let next = argmax(full.data()).unwrap() as u32;
                assert_eq!(argmax(&cached).unwrap() as u32, next);
                seq.push(next);
                cached = dec.feed(&[next]).unwrap().to_vec();
            }
        }
    }
}

#[test]
fn generation_stops_at_a_stop_token_and_rejects_bad_ids() {
    let g = golden();
    let model = load("hf");
    let case = &cases(&g, "hf")[0];
    let stop = case.greedy[2];
    let first = case.greedy.iter().position(|&t| t == stop).unwrap();
    let gen = model.generate_greedy(&case.tokens, 8, &[stop]).unwrap();
    assert_eq!(gen, case.greedy[..=first]);
    assert!(model.generate_greedy(&[211], 2, &[]).is_err());
    assert!(model.generate_greedy(&[], 2, &[]).is_err());
    assert!(model
        .forward::<Vec<u32>>(&[], Logits::All, &Hooks::default())
        .is_err());
    assert!(model
        .forward(&[vec![]], Logits::All, &Hooks::default())
        .is_err());
}

// ---- Hooks, against a slow f64 reference ---------------------------------------------------

/// A textbook Llama forward in f64 over one sequence, read from the model's named weights,
/// with residual deltas `(layer, pos, vector)`. No rope scaling, no biases (the `hf` fixture).
/// Returns the logits `[T][V]` and the hidden state after each layer `[L][T][C]`.
fn slow_forward(
    model: &Llama,
    tokens: &[u32],
    deltas: &[(usize, usize, Vec<f32>)],
) -> (Vec<Vec<f64>>, Vec<Vec<Vec<f64>>>) {
    let cfg = model.config();
    assert!(cfg.rope_scaling.is_none() && !cfg.qkv_bias && !cfg.mlp_bias);
    let w = |n: &str| -> Vec<f64> {
        model
            .weight(n)
            .unwrap()
            .data()
            .iter()
            .map(|&x| f64::from(x))
            .collect()
    };
    let (c, d, h, g) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
    );
    let eps = cfg.rms_norm_eps;
    let norm = |x: &[f64], wt: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        x.iter()
            .zip(wt)
            .map(|(v, g)| v / (ms + eps).sqrt() * g)
            .collect()
    };
    let matvec = |wm: &[f64], x: &[f64]| -> Vec<f64> {
        wm.chunks(x.len())
            .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        for head in v.chunks_mut(d) {
            let orig = head.to_vec();
            for i in 0..d {
                let f = 1.0 / cfg.rope_theta.powf((2 * (i % (d / 2))) as f64 / d as f64);
                let (s, co) = (pos as f64 * f).sin_cos();
                let rot = if i < d / 2 {
                    -orig[i + d / 2]
                } else {
                    orig[i - d / 2]
                };
                head[i] = orig[i] * co + rot * s;
            }
        }
    };
    let emb = w("model.embed_tokens.weight");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| emb[t as usize * c..(t as usize + 1) * c].to_vec())
        .collect();
    let mut hidden = Vec::new();
    for l in 0..cfg.num_hidden_layers {
        let p = |s: &str| w(&format!("model.layers.{l}.{s}"));
        let (wq, wk, wv, wo) = (
            p("self_attn.q_proj.weight"),
            p("self_attn.k_proj.weight"),
            p("self_attn.v_proj.weight"),
            p("self_attn.o_proj.weight"),
        );
        let (qs, ks, vs): (Vec<_>, Vec<_>, Vec<_>) = xs
            .iter()
            .enumerate()
            .map(|(t, x)| {
                let xn = norm(x, &p("input_layernorm.weight"));
                let (mut q, mut k) = (matvec(&wq, &xn), matvec(&wk, &xn));
                rope(&mut q, t);
                rope(&mut k, t);
                (q, k, matvec(&wv, &xn))
            })
            .fold((vec![], vec![], vec![]), |mut acc, (q, k, v)| {
                acc.0.push(q);
                acc.1.push(k);
                acc.2.push(v);
                acc
            });
        for t in 0..xs.len() {
            let mut att = vec![0.0; h * d];
            for hh in 0..h {
                let gg = hh / (h / g);
                let sc: Vec<f64> = (0..=t)
                    .map(|j| {
                        (0..d)
                            .map(|e| qs[t][hh * d + e] * ks[j][gg * d + e])
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
                for j in 0..=t {
                    for e in 0..d {
                        att[hh * d + e] += (sc[j] - m).exp() / z * vs[j][gg * d + e];
                    }
                }
            }
            let o = matvec(&wo, &att);
            xs[t].iter_mut().zip(o).for_each(|(a, b)| *a += b);
            let xn = norm(&xs[t], &p("post_attention_layernorm.weight"));
            let gate = matvec(&p("mlp.gate_proj.weight"), &xn);
            let up = matvec(&p("mlp.up_proj.weight"), &xn);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(&p("mlp.down_proj.weight"), &act);
            xs[t].iter_mut().zip(down).for_each(|(a, b)| *a += b);
            for (dl, dp, dv) in deltas {
                if *dl == l && *dp == t {
                    xs[t]
                        .iter_mut()
                        .zip(dv)
                        .for_each(|(a, &b)| *a += f64::from(b));
                }
            }
        }
        hidden.push(xs.clone());
    }
    let head = w("lm_head.weight");
    let fnorm = w("model.norm.weight");
    let logits = xs.iter().map(|x| matvec(&head, &norm(x, &fnorm))).collect();
    (logits, hidden)
}

fn to_f32(v: &[Vec<f64>]) -> Vec<f32> {
    v.iter().flatten().map(|&x| x as f32).collect()
}

/// Deterministic pseudo-random values in [-scale, scale), never all zero.
fn random_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

const PROMPT: [u32; 7] = [5, 17, 42, 99, 3, 150, 7];

#[test]
fn slow_reference_agrees_with_pytorch() {
    // The reference below is only as good as this check: it must reproduce the golden logits.
    let g = golden();
    let model = load("hf");
    let case = &cases(&g, "hf")[0];
    let (logits, _) = slow_forward(&model, &case.tokens, &[]);
    TOL.check("slow reference", &to_f32(&logits), &case.logits)
        .unwrap();
}

#[test]
fn captured_down_proj_input_is_the_swiglu_of_the_mlp_input() {
    let model = load("hf");
    let mut hooks = Hooks::default();
    for n in ["model.layers.1.mlp.down_proj", "model.layers.1.mlp.up_proj"] {
        hooks.capture_linear_inputs.insert(n.to_string());
    }
    let out = model
        .forward(&[PROMPT.to_vec()], Logits::None, &hooks)
        .unwrap();
    assert!(out.logits.is_none());
    let down_in = &out.captures.linear_inputs["model.layers.1.mlp.down_proj"];
    let mlp_in = &out.captures.linear_inputs["model.layers.1.mlp.up_proj"];
    let (i, c) = (model.config().intermediate_size, model.config().hidden_size);
    assert_eq!(down_in.shape(), [PROMPT.len(), i]);
    assert_eq!(mlp_in.shape(), [PROMPT.len(), c]);
    let wg = model.weight("model.layers.1.mlp.gate_proj.weight").unwrap();
    let wu = model.weight("model.layers.1.mlp.up_proj.weight").unwrap();
    let mut want = Vec::new();
    for t in 0..PROMPT.len() {
        let x = mlp_in.row(t);
        for j in 0..i {
            let dotp = |w: &Tensor| -> f64 {
                w.row(j)
                    .iter()
                    .zip(x)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum()
            };
            let (gv, uv) = (dotp(&wg), dotp(&wu));
            want.push((gv / (1.0 + (-gv).exp()) * uv) as f32);
        }
    }
    Tolerance::F32_KERNEL
        .check("down_proj input", down_in.data(), &want)
        .unwrap();
    // And the slow reference's layer-0 output feeds the same layer 1: the whole hidden state
    // after layer 1 agrees too.
    let (_, hidden) = slow_forward(&model, &PROMPT, &[]);
    let mut hooks = Hooks::default();
    hooks.capture_hidden.insert(1);
    let out = model
        .forward(&[PROMPT.to_vec()], Logits::None, &hooks)
        .unwrap();
    TOL.check(
        "hidden after layer 1",
        out.captures.hidden[&1].data(),
        &to_f32(&hidden[1]),
    )
    .unwrap();
}

#[test]
fn deltas_change_logits_as_the_slow_reference_says() {
    let model = load("hf");
    let c = model.config().hidden_size;
    let base = model
        .forward(&[PROMPT.to_vec()], Logits::All, &Hooks::default())
        .unwrap();
    let base = base.logits.unwrap();

    // A zero delta changes nothing, bit for bit.
    let mut hooks = Hooks::default();
    for site in [DeltaSite::Residual, DeltaSite::MlpOutput] {
        hooks.deltas.push(Delta {
            site,
            layer: 0,
            seq: 0,
            pos: 3,
            vector: vec![0.0; c],
        });
    }
    let zero = model
        .forward(&[PROMPT.to_vec()], Logits::All, &hooks)
        .unwrap();
    assert_eq!(zero.logits.unwrap().data(), base.data());

    // A random delta at layer 0, position 3: positions 0..3 are unchanged (causal), the rest
    // move exactly as the reference computes.
    let vector = random_vec(c, 9, 1.0);
    for site in [DeltaSite::Residual, DeltaSite::MlpOutput] {
        let hooks = Hooks {
            deltas: vec![Delta {
                site,
                layer: 0,
                seq: 0,
                pos: 3,
                vector: vector.clone(),
            }],
            ..Hooks::default()
        };
        let got = model
            .forward(&[PROMPT.to_vec()], Logits::All, &hooks)
            .unwrap();
        let got = got.logits.unwrap();
        let (want, _) = slow_forward(&model, &PROMPT, &[(0, 3, vector.clone())]);
        TOL.check(&format!("{site:?} delta"), got.data(), &to_f32(&want))
            .unwrap();
        let v = model.config().vocab_size;
        assert_eq!(got.data()[..3 * v], base.data()[..3 * v]);
        let moved = Tolerance::F32_FORWARD.check(
            "moved",
            &got.data()[3 * v..4 * v],
            &base.data()[3 * v..4 * v],
        );
        assert!(
            moved.is_err(),
            "a unit-scale delta must move the logits at its position"
        );
    }

    // In a batch, the delta reaches only its own sequence.
    let other = vec![77, 3, 9];
    let hooks = Hooks {
        deltas: vec![Delta {
            site: DeltaSite::Residual,
            layer: 1,
            seq: 1,
            pos: 2,
            vector,
        }],
        ..Hooks::default()
    };
    let out = model
        .forward(&[PROMPT.to_vec(), other.clone()], Logits::All, &hooks)
        .unwrap();
    let alone = model
        .forward(&[PROMPT.to_vec()], Logits::All, &Hooks::default())
        .unwrap();
    for t in 0..PROMPT.len() {
        TOL.check(
            "other sequence",
            out.logits_at(0, t).unwrap(),
            alone.logits_at(0, t).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn stop_after_layer_returns_the_captured_hidden_state() {
    let model = load("hf_variant");
    let batch = vec![PROMPT.to_vec(), vec![1, 2, 3]];
    let mut full_hooks = Hooks::default();
    full_hooks.capture_hidden.insert(0);
    let full = model.forward(&batch, Logits::All, &full_hooks).unwrap();
    let stop = Hooks {
        stop_after_layer: Some(0),
        ..Hooks::default()
    };
    let out = model.forward(&batch, Logits::All, &stop).unwrap();
    assert!(out.logits.is_none());
    let hidden = out.hidden.as_ref().expect("hidden when stopped");
    assert_eq!(
        hidden.shape(),
        [PROMPT.len() + 3, model.config().hidden_size]
    );
    assert_eq!(hidden.data(), full.captures.hidden[&0].data());
    assert_eq!(out.rows_of(1), Some(PROMPT.len()..PROMPT.len() + 3));
}

#[test]
fn invalid_hooks_are_errors_that_name_the_hook() {
    let model = load("hf");
    let c = model.config().hidden_size;
    let bad = [
        Hooks {
            stop_after_layer: Some(2),
            ..Hooks::default()
        },
        Hooks {
            capture_hidden: [5].into(),
            ..Hooks::default()
        },
        Hooks {
            capture_linear_inputs: ["model.layers.0.mlp.down".to_string()].into(),
            ..Hooks::default()
        },
        Hooks {
            capture_linear_inputs: ["model.layers.9.mlp.down_proj".to_string()].into(),
            ..Hooks::default()
        },
        Hooks {
            deltas: vec![Delta {
                site: DeltaSite::Residual,
                layer: 0,
                seq: 0,
                pos: 7,
                vector: vec![0.0; c],
            }],
            ..Hooks::default()
        },
        Hooks {
            deltas: vec![Delta {
                site: DeltaSite::Residual,
                layer: 0,
                seq: 1,
                pos: 0,
                vector: vec![0.0; c],
            }],
            ..Hooks::default()
        },
        Hooks {
            deltas: vec![Delta {
                site: DeltaSite::MlpOutput,
                layer: 0,
                seq: 0,
                pos: 0,
                vector: vec![0.0; c - 1],
            }],
            ..Hooks::default()
        },
    ];
    for h in bad {
        let err = model
            .forward(&[PROMPT.to_vec()], Logits::All, &h)
            .unwrap_err();
        assert!(err.to_string().starts_with("hooks."), "{err}");
    }
}

#[test]
fn weights_round_trip_by_name() {
    let model = load("hf_variant");
    let tensors = model.tensors().unwrap();
    let expected: Vec<String> = model
        .config()
        .expected_tensors()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(tensors.keys().cloned().collect::<Vec<_>>(), {
        let mut e = expected.clone();
        e.sort();
        e
    });
    // Every tensor reads back exactly as stored in the checkpoint (the fused layout is hidden).
    let ckpt = Checkpoint::open(&fixtures().join("hf_variant")).unwrap();
    for (name, t) in &tensors {
        assert_eq!(t, &ckpt.tensor_f32(name).unwrap(), "{name}");
    }
    let rebuilt = Llama::from_tensors(model.config().clone(), tensors.clone()).unwrap();
    let a = model
        .forward(&[PROMPT.to_vec()], Logits::All, &Hooks::default())
        .unwrap();
    let b = rebuilt
        .forward(&[PROMPT.to_vec()], Logits::All, &Hooks::default())
        .unwrap();
    assert_eq!(a.logits, b.logits);

    // set_weight changes exactly the named part of a fused buffer.
    let mut edited = rebuilt;
    let name = "model.layers.1.self_attn.k_proj.bias";
    let new = Tensor::new(vec![16], random_vec(16, 3, 1.0)).unwrap();
    edited.set_weight(name, &new).unwrap();
    assert_eq!(edited.weight(name).unwrap(), new);
    for (n, t) in &tensors {
        if n != name {
            assert_eq!(&edited.weight(n).unwrap(), t, "{n} must be untouched");
        }
    }
    assert!(edited.set_weight(name, &Tensor::zeros(vec![15])).is_err());
    assert!(
        edited.weight("lm_head.weight").is_err(),
        "tied: lm_head is the embedding"
    );

    let mut missing: BTreeMap<String, Tensor> = tensors;
    missing.remove("model.layers.0.mlp.up_proj.weight");
    let err = Llama::from_tensors(model.config().clone(), missing).unwrap_err();
    assert!(
        err.to_string()
            .contains("model.layers.0.mlp.up_proj.weight"),
        "{err}"
    );
}

// ---- Real sizes ------------------------------------------------------------------------------

/// SmolLM2-135M's config (DESIGN.md, "The default model").
const SMOLLM2_CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
 "vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
 "num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000.0,
 "max_position_embeddings":8192,"tie_word_embeddings":true}"#;

/// Timing at SmolLM2-135M's sizes with random weights (nothing in the code assumes the tiny
/// sizes). Run: `cargo test --release --test forward_golden -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check; run by hand"]
fn smollm2_sized_random_weights_timing() {
    use std::time::Instant;
    let cfg = intervene::model::LlamaConfig::from_json_bytes(
        SMOLLM2_CONFIG.as_bytes(),
        Path::new("smollm2"),
    )
    .unwrap();
    let tensors: BTreeMap<String, Tensor> = cfg
        .expected_tensors()
        .into_iter()
        .enumerate()
        .map(|(i, (n, shape))| {
            let numel: usize = shape.iter().product();
            let scale = if shape.len() == 1 {
                1.0
            } else {
                1.0 / (shape[1] as f32).sqrt()
            };
            let data = random_vec(numel, i as u64 + 1, scale);
            (n, Tensor::new(shape, data).unwrap())
        })
        .collect();
    let model = Llama::from_tensors(cfg.clone(), tensors).unwrap();
    let prompt: Vec<u32> = (0..128u32).map(|i| (i * 7919) % 49152).collect();
    // Weight FLOPs per token: 2 * (layers * (4 C^2 * (q+o) / ... ) ) counted from shapes.
    let per_layer = 2 * 576 * (576 + 2 * 192 + 576 + 3 * 1536);
    let flops = |t: usize| (t * (30 * per_layer + 2 * 576 * 49152)) as f64;
    let _ = model
        .forward(&[&prompt], Logits::Last, &Hooks::default())
        .unwrap();
    let t0 = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        let _ = model
            .forward(&[&prompt], Logits::Last, &Hooks::default())
            .unwrap();
    }
    let dt = t0.elapsed().as_secs_f64() / reps as f64;
    // Logits::Last: the LM head runs for one row only.
    let layer_flops = (128 * 30 * per_layer) as f64;
    println!(
        "prefill 128 tokens: {:.1} ms, {:.1} GFLOP/s on the layers' linears (threads {})",
        dt * 1e3,
        layer_flops / dt / 1e9,
        rayon::current_num_threads()
    );
    // The same products through the bare kernel, timed under the same machine load: the
    // ratio says how much the forward adds on top of its GEMMs.
    let shapes = [(576, 960), (576, 576), (576, 3072), (1536, 576)];
    let bufs: Vec<(Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .map(|&(k, n)| (random_vec(128 * k, 5, 1.0), random_vec(n * k, 6, 0.05)))
        .collect();
    let t0 = Instant::now();
    for _ in 0..30 {
        for (&(k, n), (x, w)) in shapes.iter().zip(&bufs) {
            let mut y = vec![0.0f32; 128 * n];
            intervene::backend::cpu::matmul::linear(x, w, None, &mut y, 128, k, n, false);
        }
    }
    let gemm_dt = t0.elapsed().as_secs_f64();
    println!(
        "bare GEMMs of one prefill: {:.1} ms, {:.1} GFLOP/s; forward / bare = {:.2}",
        gemm_dt * 1e3,
        layer_flops / gemm_dt / 1e9,
        dt / gemm_dt
    );
    let t0 = Instant::now();
    let gen = model.generate_greedy(&prompt, 33, &[]).unwrap();
    let total = t0.elapsed().as_secs_f64();
    let decode = (total - dt) / 32.0;
    println!(
        "decode: {:.1} ms/token ({:.1} tokens/s, {:.2} GB/s of f32 weights); {} tokens, {:.1} GFLOP/token",
        decode * 1e3,
        1.0 / decode,
        (30 * per_layer / 2 + 576 * 49152) as f64 * 4.0 / decode / 1e9,
        gen.len(),
        flops(1) / 1e9
    );
}

/// With `INTERVENE_SMOLLM2_DIR` pointing at an imported SmolLM2-135M checkpoint, checks that
/// it loads and scores. Skipped (with the reason printed) when absent.
#[test]
fn smollm2_checkpoint_when_present() {
    let Some(dir) = std::env::var_os("INTERVENE_SMOLLM2_DIR") else {
        eprintln!("skipped: set INTERVENE_SMOLLM2_DIR to an imported SmolLM2-135M checkpoint");
        return;
    };
    let ckpt = Checkpoint::open(Path::new(&dir)).expect("open SmolLM2 checkpoint");
    let model = Llama::load(&ckpt).expect("load SmolLM2");
    // Token ids of a short English text are not needed to check the plumbing: a repeated
    // pattern is easy to predict, so its NLL must fall far below uniform (ln 49152 = 10.8).
    let tokens: Vec<u32> = [504u32, 3575, 282, 4649, 314].repeat(6);
    let nll = model.sequence_nll(&tokens).unwrap();
    let tail: f32 = nll[nll.len() - 10..].iter().sum::<f32>() / 10.0;
    assert!(
        tail.is_finite() && tail < 2.0,
        "mean NLL of a repeated pattern: {tail}"
    );
}
