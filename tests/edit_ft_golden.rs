//! FT and LoRA editing against `fixtures/gen_ft_reference.py` (EasyEdit's loops in plain
//! PyTorch + PEFT, float64): the loss before every step, the loss after training and every
//! trained (or merged) weight's change, on the tiny fixture with explicit token ids. Plus the
//! library-level properties: only the selected tensors change, the norm constraint holds, the
//! merged LoRA delta has rank <= r.

use std::path::{Path, PathBuf};

use intervene::checkpoint::Checkpoint;
use intervene::eval::Progress;
use intervene::interventions::edit::ft::{run_ft, FtPlan};
use intervene::interventions::edit::lora::{train_lora, LoraPlan};
use intervene::interventions::edit::targets::{EditExample, TargetLoss};
use intervene::model::names::Proj;
use intervene::model::Llama;
use serde_json::Value;

const GOLDEN_FORMAT: &str = "intervene-ft-golden";
const GOLDEN_VERSION: u64 = 1;

/// Losses of O(5) from an f32 forward/backward against float64, after a few Adam steps: the
/// f32 rounding of the forward (~1e-6 relative) and of the updated weights keep the curves
/// within ~1e-5 relative; a wrong loss weighting, a missed step or a wrong lr moves them by
/// 1e-3 or more.
const LOSS_REL: f64 = 1e-4;
/// Per element of a weight's change (changes are up to steps * lr = 5e-3 to 2.5e-2). Adam's
/// early steps are ~lr * sign(g), so an f32 gradient that differs from float64 only in rounding
/// gives the same step; the bound is 0.5% of one step of lr 1e-3 (observed: <= 7e-7).
const DELTA_ABS: f64 = 5e-6;
/// Frobenius norm of each change, relative.
const DELTA_FRO_REL: f64 = 1e-3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn golden() -> Value {
    let hint = "regenerate with `/opt/pyref/bin/python fixtures/gen_ft_reference.py`";
    let g: Value = serde_json::from_slice(
        &std::fs::read(root().join("edit/ft_golden.json"))
            .unwrap_or_else(|e| panic!("{e}; {hint}")),
    )
    .expect("golden JSON");
    assert_eq!(g["format"], GOLDEN_FORMAT, "{hint}");
    assert_eq!(g["version"], GOLDEN_VERSION, "{hint}");
    g
}

fn tiny() -> (Checkpoint, Llama) {
    let ckpt = Checkpoint::open(&root().join("tiny/hf")).expect("tiny fixture");
    let model = Llama::load(&ckpt).expect("loads");
    (ckpt, model)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("numbers")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn examples(case: &Value) -> Vec<EditExample> {
    case["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| EditExample {
            line: 0,
            prompt: ids(&r["prompt"]),
            target: ids(&r["target"]),
        })
        .collect()
}

fn check_curve(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: steps");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= LOSS_REL * w.abs(),
            "{what}: loss at step {i}: {g} vs {w}"
        );
    }
}

/// Compares the change of every golden tensor (model after minus `before`).
fn check_deltas(what: &str, case: &Value, before: &Llama, after: &Llama) {
    let deltas = case["delta"].as_object().expect("delta");
    assert!(!deltas.is_empty());
    for (name, want) in deltas {
        let want = f64s(want);
        let (a, b) = (after.weight(name).unwrap(), before.weight(name).unwrap());
        let got: Vec<f64> = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| f64::from(*x) - f64::from(*y))
            .collect();
        assert_eq!(got.len(), want.len(), "{what} {name}");
        let mut worst = (0.0f64, 0usize);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if (g - w).abs() > worst.0 {
                worst = ((g - w).abs(), i);
            }
        }
        assert!(
            worst.0 <= DELTA_ABS,
            "{what} {name}: element {} differs by {:e} ({} vs {})",
            worst.1,
            worst.0,
            got[worst.1],
            want[worst.1]
        );
        let fro = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let (fg, fw) = (fro(&got), fro(&want));
        assert!(
            fw > 0.0 && (fg - fw).abs() <= DELTA_FRO_REL * fw,
            "{what} {name}: |dW| {fg} vs {fw}"
        );
        eprintln!(
            "{what} {name}: max elementwise diff {:e}, |dW|_F {fg:.6e}",
            worst.0
        );
    }
}

fn ft_case(name: &str, loss: TargetLoss) {
    let g = golden();
    let case = &g["cases"][name];
    let (_, before) = tiny();
    let mut model = before.clone();
    let layers = ids(&case["layers"]);
    let plan = FtPlan {
        layers: layers[0] as usize..*layers.last().unwrap() as usize + 1,
        steps: case["steps"].as_u64().unwrap() as usize,
        lr: case["lr"].as_f64().unwrap() as f32,
        weight_decay: 0.0,
        loss,
        norm_constraint: case["norm_constraint"].as_f64().map(|x| x as f32),
        batch_size: 0,
    };
    let out = run_ft(&mut model, &examples(case), &plan, &Progress::hidden()).unwrap();
    check_curve(name, &out.loss_per_step, &f64s(&case["loss_per_step"]));
    let fin = case["final_loss"].as_f64().unwrap();
    assert!(
        (out.final_loss - fin).abs() <= LOSS_REL * fin,
        "{name}: final {} vs {fin}",
        out.final_loss
    );
    assert_eq!(out.optimizer_steps, plan.steps as u64);
    check_deltas(name, case, &before, &model);
    // Only the selected tensors changed, and every one of them did.
    for (n, _) in before.config().expected_tensors() {
        let same = before.weight(&n).unwrap().data() == model.weight(&n).unwrap().data();
        assert_eq!(same, !out.changed.contains(&n), "{name}: {n}");
    }
    if let Some(eps) = plan.norm_constraint {
        for n in &out.changed {
            let (a, b) = (model.weight(n).unwrap(), before.weight(n).unwrap());
            let max = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            // The clamp bound is w0 +- eps rounded to f32: one ulp of the weight over eps.
            let ulp = b.data().iter().map(|w| w.abs()).fold(0.0f32, f32::max) * f32::EPSILON;
            assert!(max <= eps + ulp, "{name} {n}: max |dW| {max} > {eps}");
            assert!(
                max >= eps * 0.99,
                "{name} {n}: the constraint never bound ({max})"
            );
        }
    }
}

#[test]
fn ft_prompt_last_matches_pytorch() {
    ft_case("ft_prompt_last", TargetLoss::PromptLast);
}

#[test]
fn ft_target_new_matches_pytorch() {
    ft_case("ft_target", TargetLoss::PerExampleMean);
}

#[test]
fn ft_norm_constraint_matches_pytorch_and_bounds_the_change() {
    ft_case("ft_norm", TargetLoss::PerExampleMean);
}

/// Rank of a row-major `[rows, cols]` matrix by Gaussian elimination with full pivoting in
/// f64; pivots below `tol * max |x|` count as zero.
fn rank(m: &[f64], rows: usize, cols: usize, tol: f64) -> usize {
    let mut a = m.to_vec();
    let scale = a.iter().fold(0.0f64, |s, x| s.max(x.abs()));
    let mut r = 0;
    let (mut rset, mut cset) = (vec![false; rows], vec![false; cols]);
    loop {
        let mut best = (0.0, 0, 0);
        for i in (0..rows).filter(|&i| !rset[i]) {
            for j in (0..cols).filter(|&j| !cset[j]) {
                if a[i * cols + j].abs() > best.0 {
                    best = (a[i * cols + j].abs(), i, j);
                }
            }
        }
        if best.0 <= tol * scale {
            return r;
        }
        let (_, pi, pj) = best;
        rset[pi] = true;
        cset[pj] = true;
        r += 1;
        for i in (0..rows).filter(|&i| !rset[i]) {
            let f = a[i * cols + pj] / a[pi * cols + pj];
            for j in 0..cols {
                a[i * cols + j] -= f * a[pi * cols + j];
            }
        }
    }
}

#[test]
fn lora_matches_peft_and_the_merged_delta_has_rank_r() {
    let g = golden();
    let case = &g["cases"]["lora"];
    let (_, before) = tiny();
    let mut model = before.clone();
    let rank_r = case["rank"].as_u64().unwrap() as usize;
    let plan = LoraPlan {
        rank: rank_r,
        alpha: case["alpha"].as_f64().unwrap() as f32,
        targets: vec![Proj::Q, Proj::V],
        layers: 0..2,
        steps: case["steps"].as_u64().unwrap() as usize,
        lr: case["lr"].as_f64().unwrap() as f32,
        weight_decay: 0.0,
        seed: 0,
        batch_size: 0,
        stop_loss: None,
    };
    let mut set = plan.adapters(before.config()).unwrap();
    assert_eq!(set.lora.len(), 4);
    for ad in &mut set.lora {
        let a = &case["init_a"][&ad.module];
        ad.a = f64s(a).into_iter().map(|x| x as f32).collect();
        assert_eq!(ad.a.len(), ad.rank * ad.inp, "{}", ad.module);
    }
    let out = train_lora(&mut model, set, &examples(case), &plan, &Progress::hidden()).unwrap();
    check_curve("lora", &out.loss_per_step, &f64s(&case["loss_per_step"]));
    let fin = case["final_loss"].as_f64().unwrap();
    assert!(
        (out.final_loss - fin).abs() <= LOSS_REL * fin,
        "lora final {} vs {fin}",
        out.final_loss
    );
    check_deltas("lora", case, &before, &model);
    for (n, _) in before.config().expected_tensors() {
        let same = before.weight(&n).unwrap().data() == model.weight(&n).unwrap().data();
        assert_eq!(same, !out.changed.contains(&n), "lora: {n}");
    }
    // The merged delta is (alpha / r) B A: rank <= r, and here exactly r (A is full rank and
    // B has moved in every direction after 5 steps). f32 rounding of W + delta adds noise of
    // ~1e-7 |W|, far under the 1e-4 relative pivot threshold.
    for ad in &out.adapters.lora {
        let n = format!("{}.weight", ad.module);
        let (a, b) = (model.weight(&n).unwrap(), before.weight(&n).unwrap());
        let d: Vec<f64> = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| f64::from(*x) - f64::from(*y))
            .collect();
        let r = rank(&d, ad.out, ad.inp, 1e-4);
        assert_eq!(r, rank_r, "{n}: rank {r}");
        let fro = out.delta_fro.iter().find(|x| x.0 == n).unwrap().1;
        let direct = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (fro - direct).abs() <= 1e-3 * direct,
            "{n}: reported |dW| {fro} vs {direct}"
        );
    }
}
