//! ROME's rank-one update for one request (`rome_main.py::execute_rome`, `compute_u.py`,
//! `compute_v.py`; algorithms.md §6):
//!
//! * `k̄` = mean over the context templates of the `down_proj` input at the subject's last
//!   token; `u = C⁻¹ k̄` when `mom2_adjustment` (solved in f64 through a Cholesky factor of C,
//!   where the reference calls `torch.inverse` in f32), then `u ← u / ‖u‖`.
//! * `v*` from [`optimise_value`] at the MLP output of layer l.
//! * with `k`, `W k` the key and `down_proj` output at the subject's last token of the plain
//!   prompt: `Λ = (v* − W k) / (uᵀ k)`, `ΔW = Λ uᵀ`, so that `(W + ΔW) k = v*` exactly.
//!
//! Requests are edited one after another, each on the model the previous one produced.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::linalg::{cholesky_lower, solve_lower_in_place, solve_upper_in_place, transpose};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;
use crate::train::params::weight_mut;

use super::covariance::Covariance;
use super::key::{dot, down_proj, keys_at, mean, mlp_output, norm};
use super::prompts::{LocatedPrompt, PreparedRequest};
use super::templates::Templates;
use super::value::{optimise_value, ValueParams, ValueProblem, ValueResult, ValueSite};

/// A Cholesky factor of `C` (f64), so `C⁻¹ x` is two triangular solves.
pub struct CovSolver {
    dim: usize,
    lower: Vec<f64>,
    upper: Vec<f64>,
}

impl CovSolver {
    pub fn new(c: &Covariance) -> Result<Self> {
        let dim = c.key.dim;
        let a: Vec<f64> = c.moment.iter().map(|&v| f64::from(v)).collect();
        let lower = cholesky_lower(&a, dim).map_err(|e| {
            Error::Check(format!(
                "the covariance of layer {} ({}) is singular: {e}; use more --stats-samples \
                 or --no-mom2-adjustment",
                c.key.layer,
                c.path.display()
            ))
        })?;
        let upper = transpose(&lower, dim);
        Ok(CovSolver { dim, lower, upper })
    }

    /// `C⁻¹ x`.
    pub fn solve(&self, x: &[f32]) -> Vec<f64> {
        let mut b: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        solve_lower_in_place(&self.lower, self.dim, &mut b, 1);
        solve_upper_in_place(&self.upper, self.dim, &mut b, 1);
        b
    }
}

/// ROME's settings besides the value optimisation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RomeParams {
    pub layer: usize,
    pub mom2_adjustment: bool,
    pub value: ValueParams,
}

/// What one request did.
#[derive(Clone, Debug, Serialize)]
pub struct RomeReport {
    pub line: usize,
    pub value: ValueResult,
    /// `uᵀ k` of the plain-prompt key.
    pub u_dot_k: f64,
    /// Frobenius norm of ΔW (= ‖Λ‖, since ‖u‖ = 1).
    pub update_norm: f64,
    /// `‖(W + ΔW) k − v*‖` after the update (f32 arithmetic).
    pub residual_after: f64,
}

/// The pieces of the update, for tests and reports.
#[derive(Clone, Debug)]
pub struct RankOne {
    /// `u` (`[d_ff]`, unit norm).
    pub left: Vec<f32>,
    /// `Λ` (`[hidden]`).
    pub right: Vec<f32>,
    /// The plain-prompt key `k`.
    pub key: Vec<f32>,
    pub value: ValueResult,
}

/// A request in tokens: the context prompts (for `k̄`), the value problem, and the plain
/// prompt (for `k` and `W k`).
#[derive(Clone, Debug)]
pub struct RomeTokens {
    pub contexts: Vec<LocatedPrompt>,
    pub problem: ValueProblem,
    pub plain: LocatedPrompt,
    /// For error messages.
    pub line: usize,
}

impl RomeTokens {
    /// Tokenises a request over the templates (`compute_u` formats each template with the
    /// prompt; `compute_v` adds the target ids; the KL prompt is `"{subject} is a"`).
    pub fn new(
        tok: &Tokenizer,
        req: &PreparedRequest,
        templates: &Templates,
        layer: usize,
    ) -> Result<Self> {
        let contexts = templates.flat();
        Ok(RomeTokens {
            contexts: contexts
                .iter()
                .map(|c| req.in_context(tok, c))
                .collect::<Result<_>>()?,
            problem: ValueProblem {
                layer,
                site: ValueSite::MlpOutput,
                rewriting: contexts
                    .iter()
                    .map(|c| req.rewriting(tok, c))
                    .collect::<Result<_>>()?,
                kl: vec![req.kl_prompt(tok)?],
                target: req.target.clone(),
            },
            plain: req.in_context(tok, "{}")?,
            line: req.line,
        })
    }
}

/// Computes ROME's update for one request on the model as it is (not applied).
pub fn compute_rank_one(
    model: &mut Llama,
    t: &RomeTokens,
    solver: Option<&CovSolver>,
    hp: &RomeParams,
) -> Result<RankOne> {
    let layer = hp.layer;
    let k_bar = mean(&keys_at(model, layer, &t.contexts)?);
    let mut u: Vec<f64> = match solver {
        Some(s) => s.solve(&k_bar),
        None => k_bar.iter().map(|&v| f64::from(v)).collect(),
    };
    let un = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    if un == 0.0 || !un.is_finite() {
        return Err(Error::Check(format!(
            "request on line {}: the key direction has norm {un}",
            t.line
        )));
    }
    u.iter_mut().for_each(|v| *v /= un);
    let left: Vec<f32> = u.iter().map(|&v| v as f32).collect();

    let mut problem = t.problem.clone();
    problem.layer = layer;
    problem.site = ValueSite::MlpOutput;
    let value = optimise_value(model, &problem, &hp.value)?;

    // Λ from the plain prompt's key and output.
    let key = keys_at(model, layer, std::slice::from_ref(&t.plain))?.swap_remove(0);
    let cur = mlp_output(model, layer, &key)?;
    let ukey = dot(&left, &key);
    if ukey == 0.0 || !ukey.is_finite() {
        return Err(Error::Check(format!(
            "request on line {}: uᵀk = {ukey}",
            t.line
        )));
    }
    let right: Vec<f32> = value
        .value
        .iter()
        .zip(&cur)
        .map(|(v, c)| ((f64::from(*v) - f64::from(*c)) / ukey) as f32)
        .collect();
    Ok(RankOne {
        left,
        right,
        key,
        value,
    })
}

/// `W += Λ uᵀ` on `down_proj` of `layer`.
pub fn apply_rank_one(model: &mut Llama, layer: usize, r: &RankOne) -> Result<()> {
    let name = format!("{}.weight", down_proj(layer));
    let dff = r.left.len();
    let w = weight_mut(model, &name)?;
    if w.len() != r.right.len() * dff {
        return Err(Error::tensor(
            "<in-memory weights>",
            name,
            "update shape mismatch",
        ));
    }
    for (i, &ri) in r.right.iter().enumerate() {
        w[i * dff..(i + 1) * dff]
            .iter_mut()
            .zip(&r.left)
            .for_each(|(wij, &uj)| *wij += ri * uj);
    }
    Ok(())
}

/// Edits one request: computes and applies the update, and reports it.
pub fn rome_request(
    model: &mut Llama,
    tok: &Tokenizer,
    req: &PreparedRequest,
    templates: &Templates,
    solver: Option<&CovSolver>,
    hp: &RomeParams,
) -> Result<RomeReport> {
    let t = RomeTokens::new(tok, req, templates, hp.layer)?;
    let r = compute_rank_one(model, &t, solver, hp)?;
    apply_rank_one(model, hp.layer, &r)?;
    let after = mlp_output(model, hp.layer, &r.key)?;
    let residual_after = after
        .iter()
        .zip(&r.value.value)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    Ok(RomeReport {
        line: req.line,
        u_dot_k: dot(&r.left, &r.key),
        update_norm: norm(&r.right) * norm(&r.left),
        residual_after,
        value: r.value,
    })
}
