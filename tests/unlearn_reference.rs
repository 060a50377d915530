//! GD and RMU against PyTorch (fixtures/gen_unlearn_reference.py -> fixtures/unlearn/golden.json)
//! on the tiny fixture: the per-step losses and the weight updates of every trained tensor;
//! every other tensor bitwise unchanged; the same run twice gives the same bits.

use std::path::{Path, PathBuf};

use intervene::checkpoint::Checkpoint;
use intervene::interventions::unlearn::gd::{gradient_difference, GdSettings};
use intervene::interventions::unlearn::rmu::{rmu, RmuSettings};
use intervene::interventions::unlearn::TokenCorpus;
use intervene::model::names::Proj;
use intervene::model::Llama;
use serde_json::Value;

/// Relative tolerance on losses (f32 forward against float64).
const LOSS_RTOL: f64 = 2e-5;
/// Absolute slack on an updated weight.
const W_ATOL: f64 = 1e-7;
/// Gradient error assumed, relative to the tensor's largest gradient. A first Adam step moves
/// each weight by about lr * g / (|g| + eps), so an element whose gradient is near zero may
/// move by a different fraction of lr; the allowed error grows accordingly (capped at 2 lr).
const G_RTOL: f64 = 1e-4;
/// Fraction of elements that must also meet the tight bound W_ATOL + 1e-3 lr.
const TIGHT_FRACTION: f64 = 0.99;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> Value {
    let text = std::fs::read_to_string(root().join("fixtures/unlearn/golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model() -> Llama {
    Llama::load(&Checkpoint::open(&root().join("fixtures/tiny/hf")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn corpus(role: &str, v: &Value) -> TokenCorpus {
    TokenCorpus::from_docs(role, Path::new("golden"), ids(v)).unwrap()
}

fn close(what: &str, got: f64, want: f64) {
    let err = (got - want).abs() / want.abs().max(1e-3);
    assert!(err < LOSS_RTOL, "{what}: {got} vs {want} (rel {err:.2e})");
}

/// Checks every trained tensor's update and that the others are bitwise the same.
fn check_updates(case: &Value, before: &Llama, after: &Llama, lr: f64, eps: f64) {
    let tensors = case["tensors"].as_object().unwrap();
    let all = before.tensors().unwrap();
    let after_all = after.tensors().unwrap();
    for (name, t) in &all {
        let a = &after_all[name];
        let Some(g) = tensors.get(name) else {
            assert!(
                t.data()
                    .iter()
                    .zip(a.data())
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name} changed but is not trained"
            );
            continue;
        };
        let want = floats(&g["update"]);
        let grad = floats(&g["grad"]);
        let gmax = grad.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert_eq!(want.len(), t.data().len(), "{name}");
        let mut tight = 0usize;
        for (i, ((&p0, &p1), (&w, &gr))) in t
            .data()
            .iter()
            .zip(a.data())
            .zip(want.iter().zip(&grad))
            .enumerate()
        {
            let got = f64::from(p1) - f64::from(p0);
            let err = (got - w).abs();
            let allowed = W_ATOL + (lr * G_RTOL * gmax / (gr.abs() + eps)).min(2.0 * lr);
            assert!(
                err <= allowed,
                "{name}[{i}]: update {got:e} vs {w:e} (grad {gr:e}, allowed {allowed:e})"
            );
            tight += usize::from(err <= W_ATOL + 1e-3 * lr);
        }
        let frac = tight as f64 / want.len() as f64;
        assert!(
            frac >= TIGHT_FRACTION,
            "{name}: only {frac:.4} of elements within the tight bound"
        );
    }
}

fn run_gd(case: &Value) -> (Llama, Vec<Value>) {
    let mut m = model();
    let s = GdSettings {
        layers: 1..2,
        retain_weight: Some(case["retain_weight"].as_f64().unwrap() as f32),
        lr: case["lr"].as_f64().unwrap() as f32,
        steps: 1,
        batch_size: 2,
    };
    let out = gradient_difference(
        &mut m,
        &[corpus("--forget", &case["forget"])],
        &[corpus("--retain", &case["retain"])],
        &s,
        |_| {},
    )
    .unwrap();
    (m, out.curve)
}

#[test]
fn gd_step_matches_pytorch() {
    let g = golden();
    let case = &g["cases"]["gd"];
    let (m, curve) = run_gd(case);
    let want = &case["steps"][0];
    for k in ["forget_nll", "retain_nll", "loss"] {
        close(k, curve[0][k].as_f64().unwrap(), want[k].as_f64().unwrap());
    }
    check_updates(case, &model(), &m, case["lr"].as_f64().unwrap(), 1e-8);
    // Deterministic: a second run gives the same bits.
    let (m2, _) = run_gd(case);
    assert_eq!(m.tensors().unwrap(), m2.tensors().unwrap());
}

fn run_rmu(case: &Value) -> (Llama, Vec<Value>) {
    let mut m = model();
    let f32s = |v: &Value| -> Vec<f32> { floats(v).into_iter().map(|x| x as f32).collect() };
    let dirs: Vec<Vec<f32>> = case["directions"]
        .as_array()
        .unwrap()
        .iter()
        .map(f32s)
        .collect();
    let s = RmuSettings {
        layer: case["layer"].as_u64().unwrap() as usize,
        update_layers: 0..2,
        module: Proj::Down,
        steering_coef: f32s(&case["steering_coef"]),
        alpha: f32s(&case["alpha"]),
        lr: case["lr"].as_f64().unwrap() as f32,
        steps: 2,
        batch_size: 2,
        skip_first: 0,
    };
    let forget: Vec<TokenCorpus> = case["forget"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| corpus("--forget", v))
        .collect();
    let out = rmu(
        &mut m,
        &forget,
        &[corpus("--retain", &case["retain"])],
        &dirs,
        &s,
        |_| {},
    )
    .unwrap();
    (m, out.curve)
}

#[test]
fn rmu_two_steps_match_pytorch() {
    let g = golden();
    let case = &g["cases"]["rmu"];
    let (m, curve) = run_rmu(case);
    for (t, want) in case["steps"].as_array().unwrap().iter().enumerate() {
        close(
            &format!("step {t} forget_loss"),
            curve[t]["forget_loss"].as_f64().unwrap(),
            want["forget_loss"].as_f64().unwrap(),
        );
        close(
            &format!("step {t} loss"),
            curve[t]["loss"].as_f64().unwrap(),
            want["loss"].as_f64().unwrap(),
        );
        let r = curve[t]["retain_loss"].as_f64().unwrap();
        let wr = want["retain_loss"].as_f64().unwrap();
        if t == 0 {
            // The model is still the frozen one: exactly zero on both sides.
            assert_eq!((r, wr), (0.0, 0.0));
        } else {
            assert!(wr > 0.0);
            let err = (r - wr).abs() / wr;
            assert!(err < 1e-3, "step {t} retain_loss {r} vs {wr}");
        }
        assert_eq!(curve[t]["forget_file"], t, "forget files alternate");
    }
    check_updates(case, &model(), &m, case["lr"].as_f64().unwrap(), 1e-6);
    let (m2, _) = run_rmu(case);
    assert_eq!(m.tensors().unwrap(), m2.tensors().unwrap());
}
