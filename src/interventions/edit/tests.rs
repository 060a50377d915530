//! ROME/MEMIT on the tiny fixture (`fixtures/tiny/hf`): the value vector against PyTorch
//! (`fixtures/gen_rome_reference.py`), the rank-one update's defining properties, MEMIT's
//! agreement with ROME where the two coincide, and the covariance statistic and its cache.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::covariance::{
    layer_stats, read_cached, second_moment_sums, Covariance, StatsKey, StatsSpec,
};
use super::key::{keys_at, mlp_output, norm, residual_at};
use super::memit::memit_delta;
use super::prompts::{LocatedPrompt, RewritingPrompt};
use super::rome::{apply_rank_one, compute_rank_one, CovSolver, RomeParams, RomeTokens};
use super::value::{optimise_value, ValueParams, ValueProblem, ValueSite};
use crate::checkpoint::Checkpoint;
use crate::model::Llama;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn tiny() -> Llama {
    Llama::load(&Checkpoint::open(&repo().join("fixtures/tiny/hf")).unwrap()).unwrap()
}

fn golden() -> Value {
    let p = repo().join("fixtures/edit/rome_golden.json");
    let g: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert!(
        g["format"] == "intervene-rome-golden" && g["version"] == 1,
        "{}: unexpected header; regenerate with fixtures/gen_rome_reference.py",
        p.display()
    );
    g
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn located(v: &Value) -> LocatedPrompt {
    LocatedPrompt {
        tokens: v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect(),
        subject_last: v["subject_last"].as_u64().unwrap() as usize,
    }
}

/// The golden request in tokens, exactly as the script builds it.
fn golden_tokens(g: &Value, site: ValueSite) -> RomeTokens {
    let layer = g["layer"].as_u64().unwrap() as usize;
    let target: Vec<u32> = g["target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let contexts: Vec<LocatedPrompt> = g["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(located)
        .collect();
    let rewriting = contexts
        .iter()
        .map(|c| {
            let mut p = c.clone();
            p.tokens.extend_from_slice(&target[..target.len() - 1]);
            RewritingPrompt {
                prompt: p,
                first_target_pos: c.tokens.len() - 1,
            }
        })
        .collect();
    RomeTokens {
        plain: contexts[0].clone(),
        contexts,
        problem: ValueProblem {
            layer,
            site,
            rewriting,
            kl: g["kl"].as_array().unwrap().iter().map(located).collect(),
            target,
        },
        line: 1,
    }
}

fn hparams(h: &Value) -> ValueParams {
    ValueParams {
        steps: h["steps"].as_u64().unwrap() as usize,
        lr: h["lr"].as_f64().unwrap() as f32,
        weight_decay: h["weight_decay"].as_f64().unwrap() as f32,
        clamp_norm_factor: h["clamp_norm_factor"].as_f64().unwrap() as f32,
        kl_factor: h["kl_factor"].as_f64().unwrap() as f32,
    }
}

fn golden_pieces(g: &Value) -> Vec<Vec<u32>> {
    g["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn covariance(model: &Llama, layer: usize, pieces: &[Vec<u32>]) -> Covariance {
    let (sums, count) = second_moment_sums(model, &[layer], pieces).unwrap();
    let dim = model.config().intermediate_size;
    let key = StatsKey {
        model: "test".into(),
        layer,
        module: format!("model.layers.{layer}.mlp.down_proj"),
        corpus: "golden".into(),
        samples: pieces.len(),
        seqlen: 0,
        dim,
    };
    let moment = sums[0].iter().map(|s| (s / count as f64) as f32).collect();
    Covariance::in_memory(key, count, moment).unwrap()
}

/// `max |a - b|` and where.
fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((x - y).abs(), i))
        .fold((0.0, 0), |m, d| if d.0 > m.0 { d } else { m })
}

/// Tolerance for quantities that went through the Adam trajectory: PyTorch runs in f64, we run
/// the forward and backward in f32 (relative rounding ~1e-6 per op); Adam's normalised steps
/// do not amplify that unless a gradient component sits near zero, so 1e-3 of the value's
/// scale is loose enough for rounding and tight enough to catch a wrong term or step rule.
const ADAM_TOL: f32 = 1e-3;

#[test]
fn value_vector_matches_pytorch() {
    let g = golden();
    let mut model = tiny();
    let t = golden_tokens(&g, ValueSite::MlpOutput);
    for (name, case) in g["cases"].as_object().unwrap() {
        let hp = hparams(&case["hparams"]);
        let r = optimise_value(&mut model, &t.problem, &hp).unwrap();
        let init = floats(&case["target_init"]);
        let (d, i) = max_diff(&r.target_init, &init);
        // A forward pass, f32 vs f64: 1e-5 absolute on values of order 0.1-1.
        assert!(d < 1e-5, "{name}: target_init differs by {d} at {i}");
        let want = case["losses"].as_array().unwrap();
        assert_eq!(r.losses.len(), want.len(), "{name}: iterations");
        assert_eq!(r.early_stopped, case["early_stopped"].as_bool().unwrap());
        for (k, (got, w)) in r.losses.iter().zip(want).enumerate() {
            let wt = w["total"].as_f64().unwrap();
            assert!(
                (got.total - wt).abs() < f64::from(ADAM_TOL) * wt.abs().max(1.0),
                "{name}: loss at step {k}: {} vs {wt}",
                got.total
            );
            let ww = w["weight_decay"].as_f64().unwrap();
            assert!(
                (got.weight_decay - ww).abs() < 1e-3 * ww.abs().max(1e-3),
                "{name} wd {k}"
            );
        }
        let delta = floats(&case["delta"]);
        let scale = norm(&delta) as f32;
        assert!(scale > 1e-2, "{name}: the golden delta is not trivial");
        let (d, i) = max_diff(&r.delta, &delta);
        assert!(
            d < ADAM_TOL * scale,
            "{name}: delta differs by {d} at {i} (norm {scale})"
        );
    }
}

#[test]
fn rank_one_update_matches_pytorch_is_rank_one_and_maps_the_key_to_the_value() {
    let g = golden();
    let mut model = tiny();
    let before = tiny();
    let layer = g["layer"].as_u64().unwrap() as usize;
    let t = golden_tokens(&g, ValueSite::MlpOutput);
    let cov = covariance(&model, layer, &golden_pieces(&g));
    assert_eq!(cov.count, g["stats_tokens"].as_u64().unwrap());
    let (d, i) = max_diff(
        &(0..cov.key.dim)
            .map(|i| cov.moment[i * cov.key.dim + i])
            .collect::<Vec<_>>(),
        &floats(&g["cov_diag"]),
    );
    assert!(d < 1e-5, "covariance diagonal differs by {d} at {i}");
    let solver = CovSolver::new(&cov).unwrap();
    let case = &g["cases"]["default"];
    let hp = RomeParams {
        layer,
        mom2_adjustment: true,
        value: hparams(&case["hparams"]),
    };
    let r = compute_rank_one(&mut model, &t, Some(&solver), &hp).unwrap();
    // u = C⁻¹k̄/‖·‖: f32 keys, an f64 solve of a 77 x 77 system with condition number
    // around 1e3 here: 1e-4.
    let (d, i) = max_diff(&r.left, &floats(&g["left"]));
    assert!(d < 1e-4, "u differs by {d} at {i}");
    let right = floats(&case["right"]);
    let (d, i) = max_diff(&r.right, &right);
    assert!(
        d < ADAM_TOL * norm(&right) as f32,
        "right vector differs by {d} at {i}"
    );

    apply_rank_one(&mut model, layer, &r).unwrap();
    let name = format!("model.layers.{layer}.mlp.down_proj.weight");
    let (w0, w1) = (before.weight(&name).unwrap(), model.weight(&name).unwrap());
    let dff = r.left.len();
    let dw: Vec<f64> = w1
        .data()
        .iter()
        .zip(w0.data())
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect();
    // Rank one: every row of ΔW is a multiple of u, so removing its u-component leaves
    // nothing but rounding (relative to ‖ΔW‖).
    let u: Vec<f64> = r.left.iter().map(|&x| f64::from(x)).collect();
    let (mut rest, mut total) = (0.0, 0.0);
    for row in dw.chunks(dff) {
        let c: f64 = row.iter().zip(&u).map(|(a, b)| a * b).sum();
        rest += row
            .iter()
            .zip(&u)
            .map(|(a, b)| (a - c * b).powi(2))
            .sum::<f64>();
        total += row.iter().map(|a| a * a).sum::<f64>();
    }
    assert!(total > 1e-6, "the update is empty");
    assert!(
        (rest / total).sqrt() < 1e-5,
        "ΔW is not rank one: {}",
        (rest / total).sqrt()
    );
    // W' k* = v*: through the weights, and through a full forward pass of the edited model
    // (the residual stream at the layer moves by exactly v* − W k).
    let after = mlp_output(&model, layer, &r.key).unwrap();
    let (d, i) = max_diff(&after, &r.value.value);
    assert!(d < 1e-4, "W'k differs from v* by {d} at {i}");
    let plain = std::slice::from_ref(&t.plain);
    let (h0, h1) = (
        residual_at(&before, layer, plain).unwrap(),
        residual_at(&model, layer, plain).unwrap(),
    );
    let moved: Vec<f32> = h1[0].iter().zip(&h0[0]).map(|(a, b)| a - b).collect();
    let want: Vec<f32> = r
        .value
        .value
        .iter()
        .zip(&mlp_output(&before, layer, &r.key).unwrap())
        .map(|(v, w)| v - w)
        .collect();
    let (d, i) = max_diff(&moved, &want);
    assert!(
        d < 1e-4,
        "edited forward moved the residual by a different amount: {d} at {i}"
    );
}

#[test]
fn memit_with_one_request_and_layer_is_romes_closed_form() {
    // Where they coincide: one request, one layer (l = L), the plain template only (so ROME's
    // k̄ and MEMIT's key are the same k, and δ is optimised on the same prompts; adding δ to
    // the MLP output or to the residual leaving the layer is the same function), and no
    // weight decay and a clamp that never binds (both are scaled by ‖target_init‖, which is
    // the MLP output's norm for ROME and the residual's for MEMIT). Then z − h = δ = v* − W k,
    // and by Sherman–Morrison
    //   MEMIT: ΔW = δ kᵀ(λC + kkᵀ)⁻¹ = δ (C⁻¹k)ᵀ / (λ + kᵀC⁻¹k)
    //   ROME:  ΔW = δ (C⁻¹k)ᵀ / (kᵀC⁻¹k)
    // so MEMIT = ROME · s/(λ + s), s = kᵀC⁻¹k, and the two agree as λ → 0.
    let g = golden();
    let model = tiny();
    let layer = g["layer"].as_u64().unwrap() as usize;
    let mut t = golden_tokens(&g, ValueSite::MlpOutput);
    t.contexts.truncate(1);
    t.problem.rewriting.truncate(1);
    let cov = covariance(&model, layer, &golden_pieces(&g));
    let solver = CovSolver::new(&cov).unwrap();
    let hp = RomeParams {
        layer,
        mom2_adjustment: true,
        value: ValueParams {
            weight_decay: 0.0,
            clamp_norm_factor: 1e6,
            ..hparams(&g["cases"]["default"]["hparams"])
        },
    };
    let mut m1 = tiny();
    let rome = compute_rank_one(&mut m1, &t, Some(&solver), &hp).unwrap();

    let mut z_problem = t.problem.clone();
    z_problem.site = ValueSite::Residual;
    let mut m2 = tiny();
    let z = optimise_value(&mut m2, &z_problem, &hp.value).unwrap();
    let (d, i) = max_diff(&z.delta, &rome.value.delta);
    assert!(
        d < 1e-6,
        "δ at the residual differs from δ at the MLP output: {d} at {i}"
    );
    let k = keys_at(&model, layer, std::slice::from_ref(&t.plain)).unwrap();
    let h = residual_at(&model, layer, std::slice::from_ref(&t.plain)).unwrap();
    let resid: Vec<f64> = z
        .value
        .iter()
        .zip(&h[0])
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect();

    let dff = k[0].len();
    let rome_dw: Vec<f64> = rome
        .right
        .iter()
        .flat_map(|&r| rome.left.iter().map(move |&u| f64::from(r) * f64::from(u)))
        .collect();
    let cinv_k = solver.solve(&k[0]);
    let s: f64 = cinv_k
        .iter()
        .zip(&k[0])
        .map(|(a, b)| a * f64::from(*b))
        .sum();
    assert!(s > 0.0);
    let rel = |a: &[f64], b: &[f64]| {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    };
    // λ → 0: at λ = 1e-3·s MEMIT is ROME / 1.001 (smaller λ only makes λC + kkᵀ
    // near-singular, not the identity more exact): within 2e-3 of ROME itself, and within
    // f32 storage of u and Λ (1e-5) of the Sherman–Morrison value.
    let small = 1e-3 * s;
    let memit0 = memit_delta(&cov, small, &k, std::slice::from_ref(&resid)).unwrap();
    assert_eq!(memit0.len(), rome_dw.len());
    let e = rel(&memit0, &rome_dw);
    assert!(e < 2e-3, "MEMIT (λ→0) vs ROME: relative difference {e}");
    let scaled0: Vec<f64> = rome_dw.iter().map(|v| v * s / (small + s)).collect();
    let e = rel(&memit0, &scaled0);
    assert!(
        e < 1e-5,
        "MEMIT (λ = 1e-3 s) vs ROME·s/(λ+s): relative difference {e}"
    );
    // The default λ: ROME scaled by s/(λ + s).
    let lambda = 15000.0;
    let memit = memit_delta(&cov, lambda, &k, std::slice::from_ref(&resid)).unwrap();
    let scaled: Vec<f64> = rome_dw.iter().map(|v| v * s / (lambda + s)).collect();
    let e = rel(&memit, &scaled);
    assert!(
        e < 1e-5,
        "MEMIT (λ=15000) vs scaled ROME: relative difference {e}"
    );
    assert_eq!(memit.len() / dff, model.config().hidden_size);
    // The reported written share is s/(λ + s) for one request (Sherman–Morrison).
    let share = super::memit::written_share(&memit, &k, std::slice::from_ref(&resid));
    let want = s / (lambda + s);
    assert!(
        (share - want).abs() < 1e-6 * want.max(1e-12) + 1e-9,
        "written share {share} vs s/(λ+s) = {want}"
    );
}

#[test]
fn second_moment_equals_a_slow_per_position_sum() {
    // Independent path: the key at every position of every piece, read one position at a time
    // through `keys_at`, summed as outer products in f64.
    let g = golden();
    let model = tiny();
    let pieces = golden_pieces(&g);
    let (sums, count) = second_moment_sums(&model, &[0, 1], &pieces).unwrap();
    for (li, layer) in [0usize, 1].into_iter().enumerate() {
        let prompts: Vec<LocatedPrompt> = pieces
            .iter()
            .flat_map(|p| {
                (0..p.len()).map(move |i| LocatedPrompt {
                    tokens: p.clone(),
                    subject_last: i,
                })
            })
            .collect();
        let ks = keys_at(&model, layer, &prompts).unwrap();
        assert_eq!(ks.len() as u64, count);
        let n = ks[0].len();
        let mut want = vec![0f64; n * n];
        for k in &ks {
            for (i, &ki) in k.iter().enumerate() {
                for (j, &kj) in k.iter().enumerate() {
                    want[i * n + j] += f64::from(ki) * f64::from(kj);
                }
            }
        }
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let d = sums[li]
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        // f32 products summed over 84 tokens per batch, then in f64: 1e-5 of the scale.
        assert!(d < 1e-5 * scale, "layer {layer}: {d} (scale {scale})");
    }
}

/// The tiny model imported from its GGUF twin, which brings a tokenizer.
pub(crate) fn tiny_with_tokenizer(tmp: &Path) -> PathBuf {
    let out = tmp.join("tiny");
    crate::checkpoint::import::import(&crate::checkpoint::import::ImportPlan {
        source: repo().join("fixtures/tiny/tiny.gguf"),
        output: out.clone(),
        dtype: None,
        force: false,
    })
    .unwrap();
    out
}

#[test]
fn covariance_is_cached_reused_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_with_tokenizer(tmp.path());
    let ckpt = Checkpoint::open(&dir).unwrap();
    let model = Llama::load(&ckpt).unwrap();
    let tok = crate::tokenizer::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let spec = StatsSpec {
        corpus: repo().join("fixtures/data/c4_en_validation_first94.jsonl"),
        samples: 6,
        seqlen: 32,
        cache_dir: tmp.path().join("cache"),
    };
    let first = layer_stats(&model, "m1", &tok, &[0, 1], &spec).unwrap();
    assert!(first.iter().all(|c| !c.reused && c.count == 6 * 32));
    assert!(first[0].hash.starts_with("blake3:") && first[0].hash != first[1].hash);
    let files = std::fs::read_dir(&spec.cache_dir).unwrap().count();
    assert_eq!(files, 2, "one file per layer, no temp files left");
    // Second run: read back, same bytes, same values.
    let second = layer_stats(&model, "m1", &tok, &[1], &spec).unwrap();
    assert!(second[0].reused);
    assert_eq!(second[0].hash, first[1].hash);
    assert_eq!(second[0].moment, first[1].moment);
    // Another key (model id, sample count) is another file.
    let other = layer_stats(&model, "m2", &tok, &[1], &spec).unwrap();
    assert!(!other[0].reused && other[0].path != first[1].path);

    // A stranger's file under the expected name: wrong key, truncated, non-finite.
    let path = first[0].path.clone();
    let good = std::fs::read(&path).unwrap();
    let mut want = first[0].key.clone();
    want.layer = 1;
    let e = read_cached(&path, &want).unwrap_err().to_string();
    assert!(
        e.contains(path.to_str().unwrap()) && e.contains("key"),
        "{e}"
    );
    std::fs::write(&path, &good[..good.len() - 4]).unwrap();
    let e = layer_stats(&model, "m1", &tok, &[0], &spec)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bytes of data") && e.contains("delete the file"),
        "{e}"
    );
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let e = read_cached(&path, &first[0].key).unwrap_err().to_string();
    assert!(e.contains("non-finite"), "{e}");
    std::fs::write(&path, b"INTVCOV1\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
    let e = read_cached(&path, &first[0].key).unwrap_err().to_string();
    assert!(e.contains("header length"), "{e}");
    std::fs::write(&path, b"garbage").unwrap();
    assert!(read_cached(&path, &first[0].key).is_err());
}
