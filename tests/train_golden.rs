//! The training engine against PyTorch autograd (issue 6): losses and gradients of every
//! trainable tensor for each loss, a PEFT LoRA configuration and its merge, and a 10-step
//! AdamW loss curve, all from `fixtures/gen_grad_golden.py` (`fixtures/train/`).

use std::path::{Path, PathBuf};

use intervene::backend::cpu::tolerance::Tolerance;
use intervene::checkpoint::Checkpoint;
use intervene::model::{Hooks, Llama, Logits};
use intervene::optim::{Adam, AdamConfig};
use intervene::train::{LoraConfig, LossTerm, MseTarget, Objective, Target, TrainableSet, Trainer};
use serde_json::Value;

const GOLDEN_FORMAT: &str = "intervene-grad-golden";
const GOLDEN_VERSION: u64 = 1;

/// f32 forward and backward through two layers against a float64 reference. Gradients of
/// O(1e-2..1) carry ~1e-6 relative f32 rounding per op; 1e-3 relative plus 1e-5 absolute
/// (for the near-zero elements) leaves headroom, while a wrong term (a missing scale, a
/// transposed product, the wrong head) moves gradients by 1e-1 relative or more.
const GRAD_GOLDEN: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-3,
};
/// Scalar losses of O(1) computed in f32 with f64 reductions.
const LOSS_REL: f64 = 1e-5;
/// The bar for the AdamW loss curve, per step.
const CURVE_REL: f64 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

struct Golden {
    json: Value,
    data: Vec<f32>,
}

impl Golden {
    fn load() -> Golden {
        let hint = "regenerate with `/opt/pyref/bin/python fixtures/gen_grad_golden.py`";
        let dir = root().join("train");
        let json: Value = serde_json::from_slice(
            &std::fs::read(dir.join("grad_golden.json")).unwrap_or_else(|e| panic!("{e}; {hint}")),
        )
        .expect("golden JSON");
        assert_eq!(json["format"], GOLDEN_FORMAT, "{hint}");
        assert_eq!(json["version"], GOLDEN_VERSION, "{hint}");
        let bytes =
            std::fs::read(dir.join("grad_golden.bin")).unwrap_or_else(|e| panic!("{e}; {hint}"));
        let data = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Golden { json, data }
    }

    fn tensor(&self, entry: &Value) -> Vec<f32> {
        let off = entry["offset"].as_u64().expect("offset") as usize;
        let n: usize = entry["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .product();
        self.data[off..off + n].to_vec()
    }

    fn batch(&self) -> Vec<Vec<u32>> {
        serde_json::from_value(self.json["batch"].clone()).expect("batch")
    }

    fn case(&self, name: &str) -> &Value {
        &self.json["cases"][name]
    }
}

fn load(name: &str) -> Llama {
    let ckpt = Checkpoint::open(&root().join("tiny").join(name)).expect("open fixture");
    Llama::load(&ckpt).expect("load fixture")
}

fn targets(v: &Value) -> Vec<Target> {
    v.as_array()
        .expect("targets")
        .iter()
        .map(|t| Target {
            seq: t[0].as_u64().expect("seq") as usize,
            pos: t[1].as_u64().expect("pos") as usize,
            token: t[2].as_u64().expect("token") as u32,
            weight: t[3].as_f64().expect("weight") as f32,
        })
        .collect()
}

fn rows(v: &Value) -> Vec<(usize, usize)> {
    serde_json::from_value(v.clone()).expect("rows")
}

fn check_loss(what: &str, ours: f64, theirs: &Value) {
    let theirs = theirs.as_f64().expect("loss");
    let rel = (ours - theirs).abs() / theirs.abs().max(1e-12);
    eprintln!("{what}: loss {ours:.8} vs PyTorch {theirs:.8}, rel {rel:.1e}");
    assert!(
        rel <= LOSS_REL,
        "{what}: loss {ours} vs PyTorch {theirs} (rel {rel:e})"
    );
}

/// Compares every golden gradient by name; the trainer must have exactly those tensors.
fn check_grads(
    case: &str,
    trainer: &Trainer,
    golden: &Golden,
    grads: &Value,
    rename: impl Fn(&str) -> String,
) {
    let grads = grads.as_object().expect("grads");
    assert_eq!(
        trainer.grads().len(),
        grads.len(),
        "{case}: trained tensor count"
    );
    for (name, entry) in grads {
        let ours = trainer
            .grads()
            .get(&rename(name))
            .unwrap_or_else(|| panic!("{case}: no gradient for `{name}`"));
        let want = golden.tensor(entry);
        assert!(
            want.iter().any(|&g| g != 0.0),
            "{case}: `{name}`: all-zero golden proves nothing"
        );
        let stats = GRAD_GOLDEN
            .check(&format!("{case}: {name}"), ours, &want)
            .unwrap();
        let scale = want.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        // Shown with `--nocapture`: how close, not only that it passed.
        eprintln!(
            "{case}: {name}: max |diff| {:.2e} (max |grad| {scale:.2e})",
            stats.max_abs
        );
    }
}

fn all_tensors(model: &Llama) -> TrainableSet {
    model
        .config()
        .expected_tensors()
        .into_iter()
        .fold(TrainableSet::default(), |s, (n, _)| s.weight(&n))
}

#[test]
fn masked_cross_entropy_gradients_of_every_tensor_match_pytorch() {
    let g = Golden::load();
    let case = g.case("ce");
    let mut model = load("hf");
    let set = all_tensors(&model);
    let mut tr = Trainer::new(&mut model, set).unwrap();
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"])));
    let loss = tr.forward_backward(&g.batch(), &obj).unwrap();
    check_loss("ce", loss, &case["loss"]);
    check_grads("ce", &tr, &g, &case["grads"], str::to_string);
}

/// Keeping every trained layer's activations, keeping some, and recomputing all of them from
/// their inputs are the same arithmetic: the loss and every gradient agree bit for bit.
#[test]
fn the_activation_budget_changes_memory_never_the_gradients() {
    let g = Golden::load();
    let case = g.case("ce");
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"])));
    let run = |budget: usize| {
        let mut model = load("hf");
        let set = all_tensors(&model);
        let mut tr = Trainer::new(&mut model, set)
            .unwrap()
            .with_activation_budget(budget);
        let loss = tr.forward_backward(&g.batch(), &obj).unwrap();
        (loss, tr.grads().clone())
    };
    let kept = run(usize::MAX);
    // 0 recomputes both layers of the fixture; one layer keeps ~27.6 kB on this 12-row batch,
    // so 40 kB keeps the upper layer and recomputes the lower one.
    for budget in [0, 40_000] {
        let other = run(budget);
        assert_eq!(kept.0.to_bits(), other.0.to_bits(), "loss, budget {budget}");
        assert!(kept.1 == other.1, "gradients differ at budget {budget}");
    }
}

/// Below the lowest trained tensor the backward stops (as autograd does): the gradients it
/// does compute are those of the full backward, bit for bit. The full backward is forced by
/// training the embedding as well; each set starts its layer 0 at a different op.
#[test]
fn a_backward_cut_short_under_the_lowest_trained_tensor_keeps_every_gradient() {
    let g = Golden::load();
    let case = g.case("ce");
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"])));
    let upper = "model.layers.1.self_attn.k_proj.weight";
    let run = |set: TrainableSet, full: bool| {
        let mut model = load("hf");
        let set = if full {
            set.weight("model.embed_tokens.weight")
        } else {
            set
        };
        let mut tr = Trainer::new(&mut model, set).unwrap();
        let loss = tr.forward_backward(&g.batch(), &obj).unwrap();
        (loss, tr.grads().clone())
    };
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        seed: 3,
    };
    let mut sets: Vec<(&str, TrainableSet)> = [
        "mlp.down_proj.weight",
        "mlp.gate_proj.weight",
        "post_attention_layernorm.weight",
        "self_attn.o_proj.weight",
        "self_attn.v_proj.weight",
        "input_layernorm.weight",
    ]
    .into_iter()
    .map(|t| {
        let name = format!("model.layers.0.{t}");
        (t, TrainableSet::default().weight(&name).weight(upper))
    })
    .collect();
    let model = load("hf");
    let mut lora = TrainableSet::default()
        .lora(
            model.config(),
            &["model.layers.0.self_attn.q_proj".to_string()],
            &cfg,
        )
        .unwrap();
    // B starts at zero (PEFT's init), which would make A's gradient zero: give it values.
    let n = lora.lora[0].b.len();
    lora.lora[0].b = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 1e-2).collect();
    sets.push(("lora q_proj", lora));
    for (what, set) in sets {
        let (loss, cut) = run(set.clone(), false);
        let (full_loss, full) = run(set, true);
        assert_eq!(loss.to_bits(), full_loss.to_bits(), "{what}: loss");
        for (name, grad) in &cut {
            assert!(grad.iter().any(|&x| x != 0.0), "{what}: {name} is all zero");
            assert!(
                *grad == full[name],
                "{what}: {name} differs from the full backward"
            );
        }
    }
}

/// A trainer kept over steps runs the frozen layers under the lowest trained one once per
/// batch; what it computes is what a fresh trainer computes, after a change of the delta or
/// of the batch.
#[test]
fn a_reused_trainer_gives_what_a_fresh_one_gives() {
    let g = Golden::load();
    let case = g.case("kl");
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"])));
    let d = &case["delta"];
    let model = load("hf");
    // The delta leaves layer 0, so layer 0 is the frozen prefix.
    let set = TrainableSet::default()
        .weight("model.layers.1.mlp.down_proj.weight")
        .delta(model.config(), "delta", 0, rows(&d["rows"]));
    let init = g.tensor(&d["init"]);
    let moved: Vec<f32> = init.iter().map(|x| x * -0.5 + 0.01).collect();
    let batch = g.batch();
    let mut other = batch.clone();
    other[0].reverse();
    let fresh = |delta: &[f32], batch: &[Vec<u32>]| {
        let mut model = load("hf");
        let mut tr = Trainer::new(&mut model, set.clone()).unwrap();
        tr.set_delta("delta", delta).unwrap();
        let loss = tr.forward_backward(batch, &obj).unwrap();
        (loss.to_bits(), tr.grads().clone())
    };
    let steps = [
        (&init, &batch),
        (&moved, &batch),
        (&init, &other),
        (&moved, &other),
    ];
    let want: Vec<_> = steps.iter().map(|(d, b)| fresh(d, b)).collect();
    // Budgets: every batch kept, none, and room for one batch's stream only, so the second
    // batch is always recomputed.
    let one = batch.iter().map(Vec::len).sum::<usize>() * model.config().hidden_size * 4;
    for budget in [usize::MAX, 0, one] {
        let mut model = load("hf");
        let mut tr = Trainer::new(&mut model, set.clone())
            .unwrap()
            .with_prefix_budget(budget);
        // Twice round, so the second pass meets kept streams.
        for (i, (delta, b)) in steps.iter().chain(steps.iter()).enumerate() {
            tr.set_delta("delta", delta).unwrap();
            tr.zero_grad();
            let loss = tr.forward_backward(b, &obj).unwrap();
            let (want_loss, want) = &want[i % steps.len()];
            assert_eq!(
                loss.to_bits(),
                *want_loss,
                "loss, budget {budget}, call {i}"
            );
            assert!(tr.grads() == want, "gradients, budget {budget}, call {i}");
        }
        assert!(tr.set_delta("delta", &init[1..]).is_err());
        assert!(tr.set_delta("nope", &init).is_err());
    }
}

/// A stream handed over from the model's own forward (as RMU's frozen targets pass it) gives
/// the trainer what it computes itself, bit for bit, with and without a delta added after it;
/// a stream of the wrong length is refused, and a set that trains the embedding keeps none.
#[test]
fn a_prefix_kept_from_the_model_forward_gives_what_the_trainer_computes() {
    let g = Golden::load();
    let case = g.case("kl");
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"])));
    let d = &case["delta"];
    let init = g.tensor(&d["init"]);
    let batch = g.batch();
    let model = load("hf");
    let plain = TrainableSet::default().weight("model.layers.1.mlp.down_proj.weight");
    let with_delta = plain
        .clone()
        .delta(model.config(), "delta", 0, rows(&d["rows"]));
    let hooks = Hooks {
        stop_after_layer: Some(1),
        capture_hidden: [0].into_iter().collect(),
        ..Hooks::default()
    };
    let out = model.forward(&batch, Logits::None, &hooks).unwrap();
    let stream = out.captures.hidden[&0].data().to_vec();
    for set in [plain, with_delta] {
        let run = |keep: bool| {
            let mut model = load("hf");
            let mut tr = Trainer::new(&mut model, set.clone()).unwrap();
            assert_eq!(tr.prefix_layer(), Some(1));
            if !set.deltas.is_empty() {
                tr.set_delta("delta", &init).unwrap();
            }
            if keep {
                assert!(tr.keep_prefix(&batch, stream[1..].to_vec()).is_err());
                assert!(tr.keep_prefix(&batch, stream.clone()).unwrap());
                assert!(
                    !tr.keep_prefix(&batch, stream.clone()).unwrap(),
                    "kept twice"
                );
            }
            let loss = tr.forward_backward(&batch, &obj).unwrap();
            (loss.to_bits(), tr.grads().clone())
        };
        let (want_loss, want) = run(false);
        let (loss, grads) = run(true);
        assert_eq!(loss, want_loss, "loss, {} deltas", set.deltas.len());
        assert!(grads == want, "gradients, {} deltas", set.deltas.len());
    }
    let mut model = load("hf");
    let embed = TrainableSet::default().weight("model.embed_tokens.weight");
    let mut tr = Trainer::new(&mut model, embed).unwrap();
    assert_eq!(tr.prefix_layer(), None);
    assert!(!tr.keep_prefix(&batch, stream.clone()).unwrap());
}

#[test]
fn gradient_ascent_with_tied_head_biases_and_llama3_rope_matches_pytorch() {
    let g = Golden::load();
    let case = g.case("ga");
    let mut model = load("hf_variant");
    let set = all_tensors(&model);
    let mut tr = Trainer::new(&mut model, set).unwrap();
    let obj = Objective::gradient_ascent(targets(&case["targets"]));
    let loss = tr.forward_backward(&g.batch(), &obj).unwrap();
    check_loss("ga", loss, &case["loss"]);
    check_grads("ga", &tr, &g, &case["grads"], str::to_string);
}

#[test]
fn rome_objective_with_kl_gives_pytorchs_delta_and_weight_gradients() {
    let g = Golden::load();
    let case = g.case("kl");
    let mut model = load("hf");
    let d = &case["delta"];
    let mut set = TrainableSet::default()
        .weight("model.layers.1.mlp.down_proj.weight")
        .delta(
            model.config(),
            "delta",
            d["layer"].as_u64().unwrap() as usize,
            rows(&d["rows"]),
        );
    set.deltas[0].vector = g.tensor(&d["init"]);
    let mut tr = Trainer::new(&mut model, set).unwrap();
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"]))).with(
        case["kl_weight"].as_f64().unwrap() as f32,
        LossTerm::Kl {
            rows: rows(&case["kl_rows"]),
            init_log_probs: g.tensor(&case["init_log_probs"]),
        },
    );
    let loss = tr.forward_backward(&g.batch(), &obj).unwrap();
    check_loss("kl", loss, &case["loss"]);
    check_grads("kl", &tr, &g, &case["grads"], str::to_string);
}

#[test]
fn rmu_hidden_state_mse_stops_at_the_layer_and_matches_pytorch() {
    let g = Golden::load();
    let case = g.case("mse");
    let mut model = load("hf");
    let set = case["grads"]
        .as_object()
        .unwrap()
        .keys()
        .fold(TrainableSet::default(), |s, n| s.weight(n));
    let mut tr = Trainer::new(&mut model, set).unwrap();
    let obj = Objective::single(LossTerm::HiddenMse {
        layer: case["layer"].as_u64().unwrap() as usize,
        target: MseTarget::Broadcast(g.tensor(&case["target"])),
        from_pos: 0,
    });
    let loss = tr.forward_backward(&g.batch(), &obj).unwrap();
    check_loss("mse", loss, &case["loss"]);
    check_grads("mse", &tr, &g, &case["grads"], str::to_string);
}

#[test]
fn lora_gradients_and_merge_match_peft() {
    let g = Golden::load();
    let case = g.case("lora");
    let mut model = load("hf");
    let modules: Vec<String> = serde_json::from_value(case["modules"].clone()).unwrap();
    let cfg = LoraConfig {
        rank: case["rank"].as_u64().unwrap() as usize,
        alpha: case["alpha"].as_f64().unwrap() as f32,
        seed: 1,
    };
    let mut set = TrainableSet::default()
        .lora(model.config(), &modules, &cfg)
        .unwrap();
    let adapters = case["adapters"].as_object().unwrap();
    for ad in &mut set.lora {
        let [a, b] = ad.names();
        ad.a = g.tensor(&adapters[&a]["init"]);
        ad.b = g.tensor(&adapters[&b]["init"]);
    }
    let mut tr = Trainer::new(&mut model, set).unwrap();
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"])));
    let loss = tr.forward_backward(&g.batch(), &obj).unwrap();
    check_loss("lora", loss, &case["loss"]);
    let grads: serde_json::Map<String, Value> = adapters
        .iter()
        .map(|(k, v)| (k.clone(), v["grad"].clone()))
        .collect();
    check_grads("lora", &tr, &g, &Value::Object(grads), str::to_string);
    tr.finish().unwrap();
    for (name, entry) in case["merged"].as_object().unwrap() {
        Tolerance::F32_KERNEL
            .check(
                &format!("merged {name}"),
                model.weight(name).unwrap().data(),
                &g.tensor(entry),
            )
            .unwrap();
    }
}

#[test]
fn ten_adamw_steps_with_clipping_follow_pytorchs_loss_curve() {
    let g = Golden::load();
    let case = g.case("adamw");
    let mut model = load("hf");
    let names: Vec<String> = serde_json::from_value(case["trainable"].clone()).unwrap();
    let set = names
        .iter()
        .fold(TrainableSet::default(), |s, n| s.weight(n));
    let mut tr = Trainer::new(&mut model, set).unwrap();
    let lr = case["lr"].as_f64().unwrap() as f32;
    let mut opt = Adam::new(AdamConfig {
        weight_decay: case["weight_decay"].as_f64().unwrap() as f32,
        ..AdamConfig::adamw(lr)
    });
    let obj = Objective::single(LossTerm::CrossEntropy(targets(&case["targets"])));
    let want: Vec<f64> = serde_json::from_value(case["losses"].clone()).unwrap();
    let batch = g.batch();
    for (step, &w) in want.iter().enumerate() {
        tr.zero_grad();
        let loss = tr.forward_backward(&batch, &obj).unwrap();
        tr.clip_grad_norm(case["max_grad_norm"].as_f64().unwrap() as f32);
        tr.step(&mut opt).unwrap();
        let rel = (loss - w).abs() / w.abs();
        eprintln!("adamw step {step}: loss {loss:.8} vs {w:.8}, rel {rel:.1e}");
        assert!(
            rel <= CURVE_REL,
            "step {step}: loss {loss} vs PyTorch {w} (rel {rel:e})"
        );
    }
    // The curve must actually move, or matching it would prove little.
    assert!(want[9] < want[0] * 0.9, "golden curve is flat: {want:?}");
}

#[test]
fn gradient_accumulation_over_micro_batches_equals_the_full_batch() {
    let g = Golden::load();
    let batch = g.batch();
    let names = ["model.layers.1.mlp.down_proj.weight", "model.norm.weight"];
    let set = names
        .iter()
        .fold(TrainableSet::default(), |s, n| s.weight(n));
    let full = Target::next_token_mean(&batch);
    let mut model = load("hf");
    let mut tr = Trainer::new(&mut model, set.clone()).unwrap();
    tr.forward_backward(
        &batch,
        &Objective::single(LossTerm::CrossEntropy(full.clone())),
    )
    .unwrap();
    let whole = tr.grads().clone();
    tr.zero_grad();
    // The same weighted terms split over two micro-batches of one sequence each.
    for b in 0..2 {
        let part: Vec<Target> = full
            .iter()
            .filter(|t| t.seq == b)
            .map(|t| Target { seq: 0, ..*t })
            .collect();
        tr.forward_backward(
            &batch[b..b + 1],
            &Objective::single(LossTerm::CrossEntropy(part)),
        )
        .unwrap();
    }
    for (name, g) in tr.grads() {
        Tolerance::F32_KERNEL.check(name, g, &whole[name]).unwrap();
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut model = load("hf");
    let cfg = model.config().clone();
    assert!(TrainableSet::default()
        .select_weights(&cfg, 0..3, &["mlp"])
        .is_err());
    assert!(TrainableSet::default()
        .select_weights(&cfg, 0..1, &["nothing"])
        .is_err());
    assert!(TrainableSet::default()
        .lora(
            &cfg,
            &["lm_head".to_string()],
            &LoraConfig {
                rank: 2,
                alpha: 4.0,
                seed: 0
            }
        )
        .is_err());
    assert!(Trainer::new(&mut model, TrainableSet::default().weight("no.such.weight")).is_err());
    let set = TrainableSet::default()
        .select_weights(&cfg, 1..2, &["mlp.down_proj"])
        .unwrap();
    assert_eq!(set.weights, ["model.layers.1.mlp.down_proj.weight"]);
    let mut tr = Trainer::new(&mut model, set).unwrap();
    let batch = [vec![1u32, 2, 3]];
    let bad = [
        Objective::default(),
        Objective::single(LossTerm::CrossEntropy(Target::mean(&[(0, 3, 1)]))),
        Objective::single(LossTerm::CrossEntropy(Target::mean(&[(1, 0, 1)]))),
        Objective::single(LossTerm::CrossEntropy(Target::mean(&[(0, 0, 999)]))),
        Objective::single(LossTerm::Kl {
            rows: vec![(0, 0)],
            init_log_probs: vec![0.0; 3],
        }),
        Objective::single(LossTerm::HiddenMse {
            layer: 2,
            target: MseTarget::Broadcast(vec![0.0; 48]),
            from_pos: 0,
        }),
        Objective::single(LossTerm::HiddenMse {
            layer: 0,
            target: MseTarget::Broadcast(vec![0.0; 47]),
            from_pos: 0,
        }),
    ];
    for obj in &bad {
        assert!(tr.forward_backward(&batch, obj).is_err(), "{obj:?}");
    }
    assert!(tr.forward_backward(&[vec![1u32, 5000]], &bad[1]).is_err());
}
