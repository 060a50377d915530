//! The validated settings of one compression run (`CompressPlan`), checked against the model
//! before any work starts and serialised as the provenance step's `params`.

use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;

use super::hessian::DampConfig;
use super::mask::SparsityPattern;
use super::quant::{validate_bits, validate_group, Grid, QuantSpec};
use crate::error::{Error, Result};
use crate::model::names::Proj;
use crate::model::LlamaConfig;

/// The six compression methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Rtn,
    Gptq,
    Awq,
    Magnitude,
    Wanda,
    Sparsegpt,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Awq => "awq",
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::Sparsegpt => "sparsegpt",
        }
    }

    pub fn quantises(self) -> bool {
        matches!(self, Method::Rtn | Method::Gptq | Method::Awq)
    }

    /// Whether the method reads calibration activations.
    pub fn calibrated(self) -> bool {
        !matches!(self, Method::Rtn | Method::Magnitude)
    }
}

/// Quantiser settings (rtn, gptq, awq).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct QuantParams {
    pub bits: u32,
    /// Consecutive input columns per group; -1 = the whole row.
    pub group_size: i64,
    pub sym: bool,
    /// `gptq_asym`, `gptq_sym` or `awq` (AWQ's raw min/max zero-point grid).
    pub grid: &'static str,
}

impl QuantParams {
    pub fn spec(&self) -> QuantSpec {
        let grid = match self.grid {
            "awq" => Grid::Awq,
            "gptq_sym" => Grid::GptqSym,
            _ => Grid::GptqAsym,
        };
        QuantSpec {
            bits: self.bits,
            group: self.group_size,
            grid,
        }
    }
}

/// Pruning settings (magnitude, wanda, sparsegpt).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PruneParams {
    /// Target fraction of zeros (for N:M, `1 - N/M`).
    pub sparsity: f64,
    /// `"N:M"` as given on the command line: N nonzero weights kept in every M.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// Calibration settings (gptq, awq, wanda, sparsegpt).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibParams {
    pub file: PathBuf,
    pub samples: usize,
    pub seqlen: usize,
    pub seed: u64,
    /// Sequences run through a layer at once (bounds the activation scratch; no effect on
    /// the result beyond floating-point summation order, which is fixed for a given value).
    pub chunk_sequences: usize,
    /// Windows drawn anywhere in the documents joined into one token stream (GPTQ's
    /// WikiText-2 loader, llm-awq's `get_calib_dataset`) instead of inside one document longer
    /// than the window (GPTQ's C4 loader, the default). Recorded only when set, so earlier
    /// steps keep their form and ids.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packed: bool,
}

/// AWQ's search budget. The reference searches on ~128 short pile-val lines cut into
/// 512-token blocks; a CPU run keeps the loss evaluations to `search_samples` prefixes of
/// `search_seqlen` tokens of the calibration windows (the statistics use every token).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AwqParams {
    pub n_grid: usize,
    pub max_shrink: f64,
    pub n_sample_token: usize,
    pub search_samples: usize,
    pub search_seqlen: usize,
}

impl Default for AwqParams {
    fn default() -> Self {
        AwqParams {
            n_grid: 20,
            max_shrink: 0.5,
            n_sample_token: 512,
            search_samples: 8,
            search_seqlen: 512,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompressPlan {
    pub method: Method,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant: Option<QuantParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calib: Option<CalibParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awq: Option<AwqParams>,
    /// GPTQ/SparseGPT: f64 damping as a fraction of mean(diag H), and Cholesky retries.
    pub damp: f64,
    pub damp_retries: u32,
    pub block_size: usize,
    pub act_order: bool,
    /// GPTQ: group grids fitted up front on the original weights. Recorded only when set, so
    /// the steps of runs without it keep their earlier form (and ids).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub static_groups: bool,
    pub true_sequential: bool,
    /// Decoder layers compressed, `[start, end)`.
    pub layers: [usize; 2],
    /// Tensor-name patterns left alone (`*` matches any run of characters; without `*`, a
    /// substring match).
    pub skip: Vec<String>,
    /// Storage dtype of the output.
    pub dtype: String,
}

/// Parses `--layers`: `A` (one layer), `A..B` (end exclusive) or `A..=B` / `A-B` (inclusive).
pub fn parse_layers(s: &str, n_layers: usize) -> Result<Range<usize>> {
    let bad = |why: &str| {
        Error::usage(
            "--layers",
            format!("`{s}`: {why} (expected A, A..B, A..=B or A-B within 0..{n_layers})"),
        )
    };
    let num = |t: &str| t.trim().parse::<usize>().map_err(|_| bad("not a number"));
    let r = if let Some((a, b)) = s.split_once("..=") {
        num(a)?..num(b)? + 1
    } else if let Some((a, b)) = s.split_once("..") {
        num(a)?..num(b)?
    } else if let Some((a, b)) = s.split_once('-') {
        num(a)?..num(b)? + 1
    } else {
        let a = num(s)?;
        a..a + 1
    };
    if r.start >= r.end {
        return Err(bad("empty range"));
    }
    if r.end > n_layers {
        return Err(bad("past the last layer"));
    }
    Ok(r)
}

/// Parses `--pattern N:M` (N nonzero kept of every M) into the solvers' convention (the number
/// **pruned** per M, `mask::SparsityPattern::NM`).
pub fn parse_nm(s: &str) -> Result<SparsityPattern> {
    let bad = |why: String| Error::usage("--pattern", format!("`{s}`: {why}"));
    let (n, m) = s
        .split_once(':')
        .ok_or_else(|| bad("expected N:M, e.g. 2:4 (keep 2 of every 4)".into()))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| bad("N is not a number".into()))?;
    let m: usize = m
        .trim()
        .parse()
        .map_err(|_| bad("M is not a number".into()))?;
    if n == 0 || n >= m {
        return Err(bad(format!(
            "N:M keeps N of every M weights and needs 0 < N < M, got N = {n}, M = {m}"
        )));
    }
    Ok(SparsityPattern::NM { n: m - n, m })
}

/// Whether `name` matches a `--skip` pattern.
pub fn matches_skip(name: &str, pattern: &str) -> bool {
    if !pattern.contains('*') {
        return name.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(k) => rest = &rest[k + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

impl CompressPlan {
    pub fn damp_config(&self) -> DampConfig {
        DampConfig {
            percdamp: self.damp,
            max_retries: self.damp_retries,
        }
    }

    /// The solvers' sparsity pattern.
    pub fn pattern(&self) -> Result<SparsityPattern> {
        match &self.prune {
            Some(PruneParams {
                pattern: Some(p), ..
            }) => parse_nm(p),
            Some(p) => Ok(SparsityPattern::Unstructured(p.sparsity)),
            None => Err(Error::usage("--sparsity", "not a pruning method")),
        }
    }

    pub fn is_skipped(&self, name: &str) -> bool {
        self.skip.iter().any(|p| matches_skip(name, p))
    }

    /// The weight tensors this plan compresses, in layer order then projection order.
    pub fn targets(&self, cfg: &LlamaConfig) -> Vec<(usize, Proj, String)> {
        (self.layers[0]..self.layers[1].min(cfg.num_hidden_layers))
            .flat_map(|l| {
                Proj::ALL
                    .into_iter()
                    .map(move |p| (l, p, format!("model.layers.{l}.{}.weight", p.module())))
            })
            .filter(|(_, _, n)| !self.is_skipped(n))
            .collect()
    }

    /// Checks every setting against the model; errors name the flag at fault.
    pub fn validate(&self, cfg: &LlamaConfig) -> Result<()> {
        if let Some(q) = &self.quant {
            validate_bits(q.bits)?;
            validate_group(q.group_size)?;
        }
        if let Some(p) = &self.prune {
            if !(0.0..1.0).contains(&p.sparsity) || !p.sparsity.is_finite() {
                return Err(Error::usage(
                    "--sparsity",
                    format!("sparsity must be in [0, 1), got {}", p.sparsity),
                ));
            }
        }
        self.damp_config().validate()?;
        if self.block_size == 0 {
            return Err(Error::usage("--block-size", "must be at least 1"));
        }
        if let Some(c) = &self.calib {
            if c.samples == 0 {
                return Err(Error::usage("--calib-samples", "must be at least 1"));
            }
            if c.seqlen < 2 {
                return Err(Error::usage("--seqlen", "must be at least 2"));
            }
            if c.seqlen > cfg.max_position_embeddings {
                return Err(Error::usage(
                    "--seqlen",
                    format!(
                        "{} exceeds the model's max_position_embeddings ({})",
                        c.seqlen, cfg.max_position_embeddings
                    ),
                ));
            }
        }
        let targets = self.targets(cfg);
        if targets.is_empty() {
            return Err(Error::usage(
                "--skip",
                "every tensor of the selected layers is skipped: nothing to compress",
            ));
        }
        if self.prune.is_some() {
            let pattern = self.pattern()?;
            for (l, p, name) in &targets {
                let cols = in_features(cfg, *p);
                pattern.validate(cols).map_err(|e| {
                    Error::usage(
                        "--pattern",
                        format!("{name} (layer {l}, {cols} inputs): {e}; leave it out with --skip"),
                    )
                })?;
                if let (Method::Sparsegpt, SparsityPattern::NM { m, .. }) = (self.method, pattern) {
                    if !self.block_size.is_multiple_of(m) {
                        return Err(Error::usage(
                            "--block-size",
                            format!("{} must be a multiple of M = {m} for N:M", self.block_size),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Input width of a projection.
pub fn in_features(cfg: &LlamaConfig, p: Proj) -> usize {
    match p {
        Proj::O => cfg.num_attention_heads * cfg.head_dim,
        Proj::Down => cfg.intermediate_size,
        _ => cfg.hidden_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_nm_keeps_n_and_the_solver_prunes_m_minus_n() {
        assert_eq!(parse_nm("2:4").unwrap(), SparsityPattern::NM { n: 2, m: 4 });
        // 1:4 keeps one of four: the solver prunes three.
        assert_eq!(parse_nm("1:4").unwrap(), SparsityPattern::NM { n: 3, m: 4 });
        assert_eq!(parse_nm("3:8").unwrap(), SparsityPattern::NM { n: 5, m: 8 });
        for bad in ["4:4", "5:4", "0:4", "2", "a:4"] {
            assert!(parse_nm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layer_ranges_and_skip_patterns() {
        assert_eq!(parse_layers("3", 30).unwrap(), 3..4);
        assert_eq!(parse_layers("2..5", 30).unwrap(), 2..5);
        assert_eq!(parse_layers("2..=5", 30).unwrap(), 2..6);
        assert_eq!(parse_layers("2-5", 30).unwrap(), 2..6);
        assert!(parse_layers("5..5", 30).is_err());
        assert!(parse_layers("0..31", 30).is_err());
        assert!(matches_skip(
            "model.layers.1.mlp.down_proj.weight",
            "down_proj"
        ));
        assert!(matches_skip(
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.*.mlp.*"
        ));
        assert!(!matches_skip(
            "model.layers.1.self_attn.q_proj.weight",
            "*.mlp.*"
        ));
    }
}
