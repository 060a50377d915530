//! AWQ's searches (Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression
//! and Acceleration", MLSys 2024; mit-han-lab/llm-awq `awq/quantize/auto_scale.py`
//! `search_module_scale` and `auto_clip.py` `auto_clip_layer`), for the Linears that share one
//! input. The model-side work (running the block, applying the scales to the previous op) is
//! the caller's: it hands in a loss closure.
//!
//! * Scale search: for α in {0, 1/n_grid, …}, `s = clamp(x_mean^α, 1e-4)`,
//!   `s ← s / sqrt(max(s)·min(s))`, each weight becomes `Q(W·diag(s)) / s` (AWQ grid), the
//!   closure returns the block-output MSE; the first strict minimum wins; no finite loss is an
//!   error (the reference raises). `x_mean_j = mean_tokens |x_j|` (the reference's `x_max`).
//! * Clip search: per row and group, candidates `m = max|w_g| · (1 - i/n_grid)` for
//!   `i < int(max_shrink·n_grid)`; clamp to `[-m, m]`, AWQ-quantise, compare the group's partial
//!   dot products `Σ_g x·w` over sampled tokens (every `⌊T / n_sample_token⌋`-th); keep the
//!   smallest mean squared error (initial best 1e9, as the reference).
//!
//! Deviations: partial dot products are summed in f64 (reference: f32; here by one GEMM per
//! group, so in the GEMM's order), so near-ties may pick a different candidate; the token step is at least 1 (the reference fails with fewer than
//! `n_sample_token` tokens); rows are not processed in chunks of 256/64 (a memory device only,
//! so the reference's `out % 64 == 0` assertion is dropped); a last shorter group is allowed.

use super::quant::{Grid, QuantSpec};
use super::{check_finite, check_matrix, tensor_err};
use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::linalg;
use rayon::prelude::*;

/// AWQ settings. Defaults: the reference's (4 bits, group 128, 20-point grids, shrink to 0.5,
/// 512 sampled tokens).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqConfig {
    pub bits: u32,
    pub group: i64,
    pub n_grid: usize,
    pub max_shrink: f64,
    pub n_sample_token: usize,
}

impl Default for AwqConfig {
    fn default() -> Self {
        AwqConfig {
            bits: 4,
            group: 128,
            n_grid: 20,
            max_shrink: 0.5,
            n_sample_token: 512,
        }
    }
}

impl AwqConfig {
    pub fn spec(&self) -> Result<QuantSpec> {
        if self.n_grid == 0 {
            return Err(Error::usage("--awq-grid", "grid size must be positive"));
        }
        if !(0.0..1.0).contains(&self.max_shrink) {
            return Err(Error::usage(
                "--awq-max-shrink",
                format!("max shrink must be in [0, 1), got {}", self.max_shrink),
            ));
        }
        if self.n_sample_token == 0 {
            return Err(Error::usage("--awq-sample-tokens", "must be positive"));
        }
        QuantSpec::new(self.bits, self.group, Grid::Awq)
    }
}

/// Per-input-channel mean magnitude of activations `x` (`[tokens, in]` or `[b, t, in]`).
pub fn act_mean_abs(name: &str, x: &Tensor) -> Result<Vec<f32>> {
    if x.shape().len() < 2 || x.numel() == 0 {
        return Err(tensor_err(
            name,
            format!("expected [tokens, in], got {:?}", x.shape()),
        ));
    }
    check_finite(name, x.data())?;
    let n = x.cols();
    let mut acc = vec![0f64; n];
    for r in 0..x.rows() {
        for (a, &v) in acc.iter_mut().zip(x.row(r)) {
            *a += v.abs() as f64;
        }
    }
    Ok(acc.iter().map(|&s| (s / x.rows() as f64) as f32).collect())
}

/// The candidate scales for exponent `alpha`, normalised by `sqrt(max·min)`.
pub fn candidate_scales(x_mean: &[f32], alpha: f32) -> Vec<f32> {
    let s: Vec<f32> = x_mean.iter().map(|&x| x.powf(alpha).max(1e-4)).collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let norm = (hi * lo).sqrt();
    s.iter().map(|&v| v / norm).collect()
}

/// `Q(W · diag(s)) / s`: quantise in the scaled space, unscale (AWQ grid of `spec`).
pub fn scaled_quantize(w: &Tensor, scales: &[f32], spec: &QuantSpec) -> Tensor {
    let cols = w.cols();
    let gw = spec.group_width(cols);
    let mut out = w.data().to_vec();
    out.par_chunks_mut(cols).for_each(|row| {
        for (v, &s) in row.iter_mut().zip(scales) {
            *v *= s;
        }
        for g in row.chunks_mut(gw) {
            let p = spec.fit(g);
            p.quantize_slice(g);
        }
        for (v, &s) in row.iter_mut().zip(scales) {
            *v /= s;
        }
    });
    Tensor::new(w.shape().to_vec(), out).expect("same shape")
}

/// Result of the scale search.
#[derive(Clone, Debug)]
pub struct ScaleSearch {
    /// The winning exponent α.
    pub best_alpha: f32,
    /// The winning per-input-channel scales (`[in]`): divide the previous op by them and
    /// multiply the Linears' input columns by them.
    pub scales: Vec<f32>,
    /// The loss of every grid point, in grid order.
    pub losses: Vec<f64>,
}

/// Grid search of AWQ's per-channel scales for `weights` (Linears sharing one input, tensors
/// `names`), given the input's `x_mean` (`[in]`). `loss` receives the candidate weights
/// `Q(W·s)/s` (same order as `weights`) and returns the block-output MSE against the FP output.
pub fn search_scales<F>(
    names: &[&str],
    weights: &[&Tensor],
    x_mean: &[f32],
    cfg: &AwqConfig,
    mut loss: F,
) -> Result<ScaleSearch>
where
    F: FnMut(&[Tensor]) -> Result<f64>,
{
    let spec = cfg.spec()?;
    if names.len() != weights.len() || weights.is_empty() {
        return Err(Error::usage(
            "awq",
            format!(
                "need one name per weight, got {} names for {} weights",
                names.len(),
                weights.len()
            ),
        ));
    }
    for (name, w) in names.iter().zip(weights) {
        let (_, cols) = check_matrix(name, w)?;
        if cols != x_mean.len() {
            return Err(tensor_err(
                name,
                format!(
                    "has {cols} inputs but the activation statistics have {}",
                    x_mean.len()
                ),
            ));
        }
    }
    let xname = format!("{} (input mean |x|)", names[0]);
    check_finite(&xname, x_mean)?;
    if x_mean.iter().any(|&v| v < 0.0) {
        return Err(tensor_err(&xname, "negative mean magnitude"));
    }
    let mut best: Option<(f64, f32, Vec<f32>)> = None;
    let mut losses = Vec::with_capacity(cfg.n_grid);
    for i in 0..cfg.n_grid {
        let alpha = (i as f64 / cfg.n_grid as f64) as f32;
        let scales = candidate_scales(x_mean, alpha);
        if scales.iter().any(|s| !s.is_finite()) {
            losses.push(f64::NAN);
            continue;
        }
        let cand: Vec<Tensor> = weights
            .iter()
            .map(|w| scaled_quantize(w, &scales, &spec))
            .collect();
        let l = loss(&cand)?;
        losses.push(l);
        // `loss < best_error`: NaN never wins, the first of equal losses does.
        if l.is_finite() && best.as_ref().is_none_or(|(bl, _, _)| l < *bl) {
            best = Some((l, alpha, scales));
        }
    }
    match best {
        Some((_, best_alpha, scales)) => Ok(ScaleSearch {
            best_alpha,
            scales,
            losses,
        }),
        None => Err(tensor_err(
            names[0],
            format!("AWQ scale search: no grid point gave a finite loss ({losses:?})"),
        )),
    }
}

/// Clip search (`auto_clip_layer`) for `w` (tensor `name`, `[out, in]`, already scaled) on its
/// inputs `x` (`[tokens, in]` or `[b, t, in]`, already divided by the scales). Returns the best
/// max value per (row, group), `[out, n_groups]` row-major.
pub fn search_clip(name: &str, w: &Tensor, x: &Tensor, cfg: &AwqConfig) -> Result<Vec<f32>> {
    let spec = cfg.spec()?;
    let (rows, cols) = check_matrix(name, w)?;
    let xname = format!("{name} (inputs)");
    if x.shape().len() < 2 || x.cols() != cols || x.rows() == 0 {
        return Err(tensor_err(
            &xname,
            format!("expected [tokens, {cols}], got {:?}", x.shape()),
        ));
    }
    check_finite(&xname, x.data())?;
    let gw = spec.group_width(cols);
    let ng = spec.n_groups(cols);
    let step = (x.rows() / cfg.n_sample_token).max(1);
    let tokens: Vec<usize> = (0..x.rows()).step_by(step).collect();
    let n_shrink = (cfg.max_shrink * cfg.n_grid as f64) as usize;
    // One GEMM per (group, block of rows) scores every candidate at once: the block's rows
    // each contribute the unclipped group (the reference's `org_out`) and its `n_shrink`
    // clipped-and-quantised versions, all against the same sampled tokens, in f64.
    let nc = n_shrink + 1;
    let mut best = vec![0f32; rows * ng];
    let row_blocks: Vec<usize> = (0..rows).step_by(CLIP_ROW_BLOCK).collect();
    for g in 0..ng {
        let (c0, c1) = (g * gw, ((g + 1) * gw).min(cols));
        let len = c1 - c0;
        let xg: Vec<f64> = tokens
            .iter()
            .flat_map(|&t| x.row(t)[c0..c1].iter().map(|&v| v as f64))
            .collect();
        let picks: Vec<Vec<f32>> = row_blocks
            .par_iter()
            .map(|&r0| {
                let r1 = (r0 + CLIP_ROW_BLOCK).min(rows);
                let mut cand = vec![0f64; (r1 - r0) * nc * len];
                let mut max_vals = vec![0f32; (r1 - r0) * nc];
                let mut cur = vec![0f32; len];
                for (r, (cr, mr)) in cand
                    .chunks_mut(nc * len)
                    .zip(max_vals.chunks_mut(nc))
                    .enumerate()
                {
                    let wg = &w.row(r0 + r)[c0..c1];
                    let org_max = wg.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (c, &v) in cr[..len].iter_mut().zip(wg) {
                        *c = v as f64;
                    }
                    mr[0] = org_max;
                    for i_s in 0..n_shrink {
                        let max_val = org_max * (1.0 - i_s as f64 / cfg.n_grid as f64) as f32;
                        for (c, &v) in cur.iter_mut().zip(wg) {
                            *c = v.clamp(-max_val, max_val);
                        }
                        let p = spec.fit(&cur);
                        p.quantize_slice(&mut cur);
                        let slot = &mut cr[(1 + i_s) * len..(2 + i_s) * len];
                        for (c, &v) in slot.iter_mut().zip(&cur) {
                            *c = v as f64;
                        }
                        mr[1 + i_s] = max_val;
                    }
                }
                let n = (r1 - r0) * nc;
                let out = linalg::matmul_nt_f64(&xg, &cand, tokens.len(), n, len, false);
                // Squared differences to the unclipped output, summed over tokens in token
                // order, reading `out` front to back.
                let mut errs = vec![0f64; (r1 - r0) * n_shrink];
                for orow in out.chunks(n) {
                    for (o, err) in orow.chunks(nc).zip(errs.chunks_mut(n_shrink.max(1))) {
                        for (e, &c) in err.iter_mut().zip(&o[1..]) {
                            let d = c - o[0];
                            *e += d * d;
                        }
                    }
                }
                (0..r1 - r0)
                    .map(|r| {
                        let err = &errs[r * n_shrink..(r + 1) * n_shrink];
                        // Initial best 1e9 and a strict `<`, as the reference: the first of
                        // equal errors wins, and with no candidate below 1e9 the group keeps
                        // its own max.
                        let mut min_err = 1e9f64;
                        let mut best_max = max_vals[r * nc];
                        for (i_s, &e) in err.iter().enumerate() {
                            let e = e / tokens.len() as f64;
                            if e < min_err {
                                min_err = e;
                                best_max = max_vals[r * nc + 1 + i_s];
                            }
                        }
                        best_max
                    })
                    .collect()
            })
            .collect();
        for (&r0, block) in row_blocks.iter().zip(&picks) {
            for (r, &m) in block.iter().enumerate() {
                best[(r0 + r) * ng + g] = m;
            }
        }
    }
    Ok(best)
}

/// Rows scored per GEMM in the clip search: the block's candidate matrix and output stay a
/// few MiB, and the blocks are the unit of parallel work.
const CLIP_ROW_BLOCK: usize = 128;

/// `clamp(W, -max_val, max_val)` per (row, group), `max_val` from [`search_clip`].
pub fn apply_clip(name: &str, w: &Tensor, max_val: &[f32], group: i64) -> Result<Tensor> {
    super::quant::validate_group(group)?;
    let (rows, cols) = check_matrix(name, w)?;
    let gw = if group < 0 {
        cols
    } else {
        (group as usize).min(cols)
    };
    let ng = cols.div_ceil(gw);
    super::quant::check_table(&format!("{name} (clip values)"), max_val, rows * ng)?;
    let mut out = w.data().to_vec();
    for (r, row) in out.chunks_mut(cols).enumerate() {
        for (g, chunk) in row.chunks_mut(gw).enumerate() {
            let m = max_val[r * ng + g];
            for v in chunk {
                *v = v.clamp(-m.abs(), m.abs());
            }
        }
    }
    Ok(Tensor::new(w.shape().to_vec(), out).expect("same shape"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interventions::compress::TestRng;

    fn mse_closure<'a>(x: &'a Tensor, w: &'a Tensor) -> impl FnMut(&[Tensor]) -> Result<f64> + 'a {
        move |cand: &[Tensor]| {
            let (t, n, o) = (x.rows(), x.cols(), w.rows());
            let mut s = 0.0;
            for ti in 0..t {
                for r in 0..o {
                    let a: f64 = (0..n)
                        .map(|j| x.row(ti)[j] as f64 * w.row(r)[j] as f64)
                        .sum();
                    let b: f64 = (0..n)
                        .map(|j| x.row(ti)[j] as f64 * cand[0].row(r)[j] as f64)
                        .sum();
                    s += (a - b) * (a - b);
                }
            }
            Ok(s / (t * o) as f64)
        }
    }

    #[test]
    fn scale_search_prefers_protecting_salient_channels() {
        let mut rng = TestRng::new(21);
        let (t, n, o) = (64, 32, 8);
        let mut x = rng.matrix(t, n).into_data();
        // Channels 0..4 carry large activations: α > 0 should win.
        for ti in 0..t {
            for j in 0..4 {
                x[ti * n + j] *= 30.0;
            }
        }
        let x = Tensor::new(vec![t, n], x).unwrap();
        let w = rng.matrix(o, n);
        let cfg = AwqConfig {
            bits: 3,
            group: 16,
            ..Default::default()
        };
        let xm = act_mean_abs("x", &x).unwrap();
        let res = search_scales(&["w"], &[&w], &xm, &cfg, mse_closure(&x, &w)).unwrap();
        assert_eq!(res.losses.len(), 20);
        assert!(res.best_alpha > 0.0, "{res:?}");
        let min = res.losses.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(res.losses[0] > min);
        // Normalised: max · min of the scales is 1.
        let (lo, hi) = res
            .scales
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!((lo * hi - 1.0).abs() < 1e-4);
        // No finite loss → error.
        let e = search_scales(&["w"], &[&w], &xm, &cfg, |_| Ok(f64::NAN));
        assert!(e.is_err());
    }

    /// The clip search written the slow, obvious way: per row, group and candidate, a scalar
    /// f64 dot product per sampled token (the shape of the reference's loops).
    fn search_clip_scalar(w: &Tensor, x: &Tensor, cfg: &AwqConfig) -> Vec<f32> {
        let spec = cfg.spec().unwrap();
        let (rows, cols) = (w.rows(), w.cols());
        let (gw, ng) = (spec.group_width(cols), spec.n_groups(cols));
        let step = (x.rows() / cfg.n_sample_token).max(1);
        let xs: Vec<&[f32]> = (0..x.rows()).step_by(step).map(|t| x.row(t)).collect();
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
        };
        let mut best = vec![0f32; rows * ng];
        for r in 0..rows {
            for g in 0..ng {
                let (c0, c1) = (g * gw, ((g + 1) * gw).min(cols));
                let wg = &w.row(r)[c0..c1];
                let org: Vec<f64> = xs.iter().map(|xt| dot(&xt[c0..c1], wg)).collect();
                let org_max = wg.iter().fold(0f32, |m, v| m.max(v.abs()));
                let (mut best_max, mut min_err) = (org_max, 1e9f64);
                for i_s in 0..(cfg.max_shrink * cfg.n_grid as f64) as usize {
                    let max_val = org_max * (1.0 - i_s as f64 / cfg.n_grid as f64) as f32;
                    let mut cur: Vec<f32> = wg.iter().map(|v| v.clamp(-max_val, max_val)).collect();
                    spec.fit(&cur).quantize_slice(&mut cur);
                    let err = xs
                        .iter()
                        .zip(&org)
                        .map(|(xt, o)| (dot(&xt[c0..c1], &cur) - o).powi(2))
                        .sum::<f64>()
                        / xs.len() as f64;
                    if err < min_err {
                        min_err = err;
                        best_max = max_val;
                    }
                }
                best[r * ng + g] = best_max;
            }
        }
        best
    }

    #[test]
    fn clip_search_matches_the_scalar_version() {
        let mut rng = TestRng::new(23);
        // Odd and prime sizes, a last short group, more rows than one GEMM block, and more
        // tokens than are sampled (every ⌊t/n_sample_token⌋-th).
        for &(t, n, o, group, bits, sample) in &[
            (37, 53, 5, 16, 3, 512),
            (300, 96, 131, 32, 4, 64),
            (700, 40, 260, -1, 4, 512),
            (129, 70, 17, 64, 2, 50),
        ] {
            let x = rng.matrix(t, n);
            let mut w = rng.matrix(o, n);
            w.data_mut()[3] = 6.0;
            let cfg = AwqConfig {
                bits,
                group,
                n_sample_token: sample,
                ..Default::default()
            };
            let fast = search_clip("w", &w, &x, &cfg).unwrap();
            let slow = search_clip_scalar(&w, &x, &cfg);
            let same = fast.iter().zip(&slow).filter(|(a, b)| a == b).count();
            // Both sum in f64, in different orders: only an exact near-tie could differ.
            assert_eq!(same, slow.len(), "t {t} n {n} o {o} group {group}");
            // Some groups really are clipped, so the comparison covers the search.
            let spec = cfg.spec().unwrap();
            let clipped = (0..o)
                .flat_map(|r| {
                    let gw = spec.group_width(n);
                    w.row(r)
                        .chunks(gw)
                        .map(|g| g.iter().fold(0f32, |m, v| m.max(v.abs())))
                        .collect::<Vec<_>>()
                })
                .zip(&fast)
                .filter(|(m, f)| *f < m)
                .count();
            assert!(clipped > 0, "t {t} n {n}: no group clipped");
        }
    }

    #[test]
    fn clip_search_never_worse_than_unclipped() {
        let mut rng = TestRng::new(22);
        let (t, n, o) = (100, 48, 4);
        let x = rng.matrix(t, n);
        let mut w = rng.matrix(o, n);
        w.data_mut()[5] = 8.0; // an outlier that clipping should shrink
        let cfg = AwqConfig {
            bits: 3,
            group: 16,
            ..Default::default()
        };
        let mv = search_clip("w", &w, &x, &cfg).unwrap();
        assert_eq!(mv.len(), o * 3);
        assert!(mv[0] < 8.0, "outlier group should be clipped: {}", mv[0]);
        // With one group per row, candidate 0 is the unclipped grid, so the chosen clip can
        // only lower each row's output error (all tokens are sampled: 100 < 512).
        let row_cfg = AwqConfig { group: -1, ..cfg };
        let mv_row = search_clip("w", &w, &x, &row_cfg).unwrap();
        let spec = row_cfg.spec().unwrap();
        let ones = vec![1.0f32; n];
        let clipped = apply_clip("w", &w, &mv_row, -1).unwrap();
        let err =
            |cand: &Tensor| mse_closure(&x, &w)(&[scaled_quantize(cand, &ones, &spec)]).unwrap();
        assert!(err(&clipped) <= err(&w) * (1.0 + 1e-9));
        assert!(apply_clip("w", &w, &mv[1..], 16).is_err());
    }
}
