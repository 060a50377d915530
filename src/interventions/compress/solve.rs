//! Dispatch from a plan to the per-layer solvers (RTN, GPTQ, magnitude, Wanda, SparseGPT) for
//! one weight and the statistics of its input; AWQ has its own layer-level driver (`awq`).

use super::gptq::{fasterquant, output_error, GptqConfig, GptqOutput};
use super::hessian::{DampReport, Hessian};
use super::magnitude::prune_magnitude;
use super::mask::PruneOutput;
use super::plan::{CompressPlan, Method};
use super::rtn::rtn;
use super::sparsegpt::{fasterprune, SparseGptConfig};
use super::wanda::{prune_wanda, InputNorms};
use crate::backend::Tensor;
use crate::error::{Error, Result};

/// The calibration statistics of one linear input (shared by the linears reading it).
pub enum InputStats {
    None,
    Hessian(Hessian),
    Norms(InputNorms),
}

impl InputStats {
    /// An empty accumulator of the kind `method` needs, for `n` input features.
    pub fn new(method: Method, n: usize) -> Self {
        match method {
            Method::Gptq | Method::Sparsegpt => InputStats::Hessian(Hessian::new(n)),
            Method::Wanda => InputStats::Norms(InputNorms::new(n)),
            _ => InputStats::None,
        }
    }

    /// Adds a batch of inputs `[sequences, tokens, n]`.
    pub fn add(&mut self, name: &str, x: &Tensor) -> Result<()> {
        match self {
            InputStats::Hessian(h) => h.add_batch(name, x),
            InputStats::Norms(n) => n.add_batch(name, x),
            InputStats::None => Ok(()),
        }
    }
}

/// A solved weight and the damping its factorisation needed (GPTQ, SparseGPT).
pub struct Solved {
    pub weight: Tensor,
    pub damp: Option<DampReport>,
    /// GPTQ with act-order: each input column's quantisation group (AutoGPTQ's `g_idx`).
    pub g_idx: Option<Vec<u32>>,
    /// GPTQ: its objective for the result and for round-to-nearest on the same grid and
    /// Hessian (`gptq::output_error`), so a step shows what the error feedback gained.
    pub errors: Option<ObjectiveErrors>,
}

impl Solved {
    /// A solver's weight with nothing else to record (RTN, magnitude, Wanda).
    pub fn weight_only(weight: Tensor) -> Self {
        Solved {
            weight,
            damp: None,
            g_idx: None,
            errors: None,
        }
    }

    /// A pruned weight and the damping its factorisation needed (SparseGPT).
    pub fn pruned(out: PruneOutput) -> Self {
        Solved {
            damp: out.damp,
            ..Solved::weight_only(out.weight)
        }
    }
}

/// See [`Solved::errors`].
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ObjectiveErrors {
    pub output_error: f64,
    pub rtn_output_error: f64,
}

/// Compresses weight `w` (tensor `name`) by the plan's method with its input statistics.
pub fn solve(plan: &CompressPlan, name: &str, w: &Tensor, stats: &InputStats) -> Result<Solved> {
    let missing = || {
        Error::usage(
            plan.method.name(),
            format!("{name}: no calibration statistics"),
        )
    };
    match plan.method {
        Method::Rtn => {
            let q = plan.quant.as_ref().ok_or_else(missing)?;
            Ok(Solved::weight_only(rtn(name, w, q.spec())?.weight))
        }
        Method::Gptq => {
            let InputStats::Hessian(h) = stats else {
                return Err(missing());
            };
            let cfg = gptq_config(plan)?;
            let out = fasterquant(name, w, h, &cfg)?;
            gptq_solved(name, w, h, &cfg, out)
        }
        Method::Magnitude => Ok(Solved::weight_only(
            prune_magnitude(name, w, plan.pattern()?)?.weight,
        )),
        Method::Wanda => {
            let InputStats::Norms(n) = stats else {
                return Err(missing());
            };
            Ok(Solved::weight_only(
                prune_wanda(name, w, &n.scaler_row(), plan.pattern()?)?.weight,
            ))
        }
        Method::Sparsegpt => {
            let InputStats::Hessian(h) = stats else {
                return Err(missing());
            };
            Ok(Solved::pruned(fasterprune(
                name,
                w,
                h,
                &sparsegpt_config(plan)?,
            )?))
        }
        Method::Awq => Err(Error::usage(
            "awq",
            "AWQ transforms whole layers (compress::awq), not single tensors",
        )),
    }
}

/// GPTQ's settings from a plan.
pub(crate) fn gptq_config(plan: &CompressPlan) -> Result<GptqConfig> {
    let q = plan
        .quant
        .as_ref()
        .ok_or_else(|| Error::usage("gptq", "no quantisation settings"))?;
    Ok(GptqConfig {
        bits: q.bits,
        group: q.group_size,
        sym: q.sym,
        act_order: plan.act_order,
        static_groups: plan.static_groups,
        block_size: plan.block_size,
        damp: plan.damp_config(),
    })
}

/// A GPTQ result with its objective against round-to-nearest on the same grid and Hessian.
pub(crate) fn gptq_solved(
    name: &str,
    w: &Tensor,
    h: &Hessian,
    cfg: &GptqConfig,
    out: GptqOutput,
) -> Result<Solved> {
    let nearest = rtn(name, w, cfg.spec()?)?.weight;
    let errors = ObjectiveErrors {
        output_error: output_error(w, &out.quantized.weight, h),
        rtn_output_error: output_error(w, &nearest, h),
    };
    Ok(Solved {
        errors: Some(errors),
        g_idx: out.perm.is_some().then_some(out.quantized.g_idx),
        weight: out.quantized.weight,
        damp: Some(out.damp),
    })
}

/// SparseGPT's settings from a plan.
pub(crate) fn sparsegpt_config(plan: &CompressPlan) -> Result<SparseGptConfig> {
    Ok(SparseGptConfig {
        pattern: plan.pattern()?,
        block_size: plan.block_size,
        damp: plan.damp_config(),
    })
}
