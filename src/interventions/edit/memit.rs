//! MEMIT's batch update (`memit_main.py::execute_memit`, `compute_ks.py`, `compute_z.py`;
//! algorithms.md §7):
//!
//! 1. For every request, `z_i = h_L + δ_i` from [`optimise_value`] on the residual stream
//!    leaving the last edited layer L (on the unedited model).
//! 2. For each edited layer l (index i of m, increasing), on the model as the earlier layers
//!    left it: keys `K` (`[d_ff, n]`: per request, the mean of the plain-template key and the
//!    mean over the generated templates), current `H` at L on the plain prompts,
//!    `R = (Z − H) / (m − i)`, and in f64 `ΔW_l = R Kᵀ (λ C_l + K Kᵀ)⁻¹` (a Cholesky solve of
//!    the symmetric positive-definite system, where the reference calls `linalg.solve`).
//!    `W_l += ΔW_l` before moving to the next layer.
//!
//! The reference restores every weight and adds all `ΔW_l` at the end; each `ΔW_l` touches
//! its own layer only, so the final weights are the same.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::linalg::{cholesky_lower, solve_lower_in_place, solve_upper_in_place, transpose};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;
use crate::train::params::weight_mut;

use super::covariance::Covariance;
use super::key::{down_proj, keys_at, mean, residual_at};
use super::prompts::PreparedRequest;
use super::templates::Templates;
use super::value::{optimise_value, ValueParams, ValueProblem, ValueResult, ValueSite};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemitParams {
    pub layers: Vec<usize>,
    /// `mom2_update_weight` λ.
    pub lambda: f64,
    pub value: ValueParams,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    pub layer: usize,
    /// Frobenius norm of ΔW_l.
    pub update_norm: f64,
    /// ‖Z − H‖_F before this layer's update (all requests).
    pub residual_norm: f64,
    /// ‖ΔW_l K‖_F / ‖R‖_F: the share of this layer's residual target `R` that its update
    /// writes at the keys (1 with λ → 0; `s / (λ + s)` for one request, `s = kᵀC⁻¹k`).
    pub written_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemitReport {
    pub values: Vec<(usize, ValueResult)>,
    pub layers: Vec<LayerReport>,
    /// ‖Z − H_L‖_F after all updates.
    pub final_residual_norm: f64,
}

/// MEMIT's keys at `layer` for each request: ½·(plain key) + ½·mean(generated-template keys),
/// i.e. the mean of the per-group means (`compute_ks`).
pub fn request_keys(
    model: &Llama,
    tok: &Tokenizer,
    reqs: &[PreparedRequest],
    templates: &Templates,
    layer: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        let mut group_means = Vec::new();
        for g in &templates.groups {
            let located = g
                .iter()
                .map(|c| r.in_context(tok, c))
                .collect::<Result<Vec<_>>>()?;
            group_means.push(mean(&keys_at(model, layer, &located)?));
        }
        out.push(mean(&group_means));
    }
    Ok(out)
}

/// `ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹` in f64: `keys` n × d_ff, `resid` n × d; returns d × d_ff.
pub fn memit_delta(
    cov: &Covariance,
    lambda: f64,
    keys: &[Vec<f32>],
    resid: &[Vec<f64>],
) -> Result<Vec<f64>> {
    let dff = cov.key.dim;
    let n = keys.len();
    let d = resid.first().map_or(0, Vec::len);
    let mut a: Vec<f64> = cov.moment.iter().map(|&v| lambda * f64::from(v)).collect();
    for k in keys {
        if k.len() != dff {
            return Err(Error::Check("key width differs from the covariance".into()));
        }
        for (i, &ki) in k.iter().enumerate() {
            let ki = f64::from(ki);
            if ki == 0.0 {
                continue;
            }
            let row = &mut a[i * dff..(i + 1) * dff];
            row.iter_mut()
                .zip(k)
                .for_each(|(x, kj)| *x += ki * f64::from(*kj));
        }
    }
    let lower = cholesky_lower(&a, dff).map_err(|e| {
        Error::Check(format!(
            "λ·C + K Kᵀ of layer {} is not positive definite: {e}; raise --lambda or use more \
             --stats-samples",
            cov.key.layer
        ))
    })?;
    // X = (λC + KKᵀ)⁻¹ K  (d_ff × n).
    let mut x = vec![0f64; dff * n];
    for (j, k) in keys.iter().enumerate() {
        for (i, &v) in k.iter().enumerate() {
            x[i * n + j] = f64::from(v);
        }
    }
    solve_lower_in_place(&lower, dff, &mut x, n);
    solve_upper_in_place(&transpose(&lower, dff), dff, &mut x, n);
    // ΔW[r, c] = Σ_j resid[j][r] · X[c, j].
    let mut dw = vec![0f64; d * dff];
    for (j, rj) in resid.iter().enumerate() {
        for (r, &rv) in rj.iter().enumerate() {
            if rv == 0.0 {
                continue;
            }
            let row = &mut dw[r * dff..(r + 1) * dff];
            for (c, w) in row.iter_mut().enumerate() {
                *w += rv * x[c * n + j];
            }
        }
    }
    Ok(dw)
}

/// `‖ΔW K‖_F / ‖R‖_F` for `dw` d × d_ff, `keys` n × d_ff, `resid` n × d.
pub fn written_share(dw: &[f64], keys: &[Vec<f32>], resid: &[Vec<f64>]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (k, r) in keys.iter().zip(resid) {
        let dff = k.len();
        for (row, &rv) in dw.chunks_exact(dff).zip(r) {
            let wk: f64 = row.iter().zip(k).map(|(w, &k)| w * f64::from(k)).sum();
            num += wk * wk;
            den += rv * rv;
        }
    }
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        0.0
    }
}

/// Optimises every request's target, then updates the layers in turn.
pub fn memit(
    model: &mut Llama,
    tok: &Tokenizer,
    reqs: &[PreparedRequest],
    templates: &Templates,
    covs: &[Covariance],
    hp: &MemitParams,
) -> Result<MemitReport> {
    let m = hp.layers.len();
    let &z_layer = hp
        .layers
        .last()
        .ok_or_else(|| Error::usage("--layers", "no layer to edit"))?;
    if covs.len() != m {
        return Err(Error::Check("one covariance per layer expected".into()));
    }
    let contexts = templates.flat();
    let mut values = Vec::with_capacity(reqs.len());
    for r in reqs {
        let rewriting = contexts
            .iter()
            .map(|c| r.rewriting(tok, c))
            .collect::<Result<Vec<_>>>()?;
        let problem = ValueProblem {
            layer: z_layer,
            site: ValueSite::Residual,
            rewriting,
            kl: vec![r.kl_prompt(tok)?],
            target: r.target.clone(),
        };
        values.push((r.line, optimise_value(model, &problem, &hp.value)?));
    }
    let plain = reqs
        .iter()
        .map(|r| r.in_context(tok, "{}"))
        .collect::<Result<Vec<_>>>()?;
    let residuals = |model: &Llama| -> Result<Vec<Vec<f64>>> {
        let h = residual_at(model, z_layer, &plain)?;
        Ok(values
            .iter()
            .zip(&h)
            .map(|((_, v), h)| {
                v.value
                    .iter()
                    .zip(h)
                    .map(|(z, h)| f64::from(*z) - f64::from(*h))
                    .collect()
            })
            .collect())
    };
    let fro = |r: &[Vec<f64>]| r.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
    let mut layers = Vec::with_capacity(m);
    for (i, (&l, cov)) in hp.layers.iter().zip(covs).enumerate() {
        let keys = request_keys(model, tok, reqs, templates, l)?;
        let full = residuals(model)?;
        let residual_norm = fro(&full);
        let share = (m - i) as f64;
        let resid: Vec<Vec<f64>> = full
            .iter()
            .map(|r| r.iter().map(|v| v / share).collect())
            .collect();
        let dw = memit_delta(cov, hp.lambda, &keys, &resid)?;
        let name = format!("{}.weight", down_proj(l));
        let w = weight_mut(model, &name)?;
        if w.len() != dw.len() {
            return Err(Error::tensor(
                "<in-memory weights>",
                name,
                "update shape mismatch",
            ));
        }
        w.iter_mut().zip(&dw).for_each(|(w, d)| *w += *d as f32);
        layers.push(LayerReport {
            layer: l,
            update_norm: dw.iter().map(|v| v * v).sum::<f64>().sqrt(),
            residual_norm,
            written_share: written_share(&dw, &keys, &resid),
        });
    }
    let final_residual_norm = fro(&residuals(model)?);
    Ok(MemitReport {
        values,
        layers,
        final_residual_norm,
    })
}
