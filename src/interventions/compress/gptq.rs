//! GPTQ `fasterquant` (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
//! Generative Pre-trained Transformers", ICLR 2023; IST-DASLab/gptq `gptq.py`): column-by-column
//! quantisation of `W [out, in]` with the quantisation error spread over the not-yet-quantised
//! columns through the upper Cholesky factor `U` of `H⁻¹`.
//!
//! Follows the reference step for step (algorithms.md section 2):
//! * whole-row params (`group = -1`) are fitted on the original `W`, before dead columns are
//!   zeroed (the reference calls `find_params(W)` first);
//! * grouped params (dynamic groups, `static_groups` off) are refitted at the group's first
//!   column from the *outer* `W`: it has the lazy updates of earlier blocks but not the in-block
//!   rank-1 updates (those live in the block copy `W1`), exactly as `find_params(W[:, c:c+g])`;
//! * `static_groups` (AutoGPTQ's option; llmcompressor always works this way): every group's
//!   params are fitted before the solve on the unpermuted `W` (dead columns already zeroed),
//!   and column j always uses its own group's params, `g_idx[j] = j / group` even with
//!   act-order;
//! * act-order permutes columns by descending `diag(H)` (after the dead-column fix); groups are
//!   runs of `group` columns in *permuted* order and `g_idx[j]` is the group of the permuted
//!   position of original column j (AutoGPTQ's `g_idx`);
//! * W and `U` are f32 as in the reference (TF32 off); `U` is computed in f64 and rounded.

use super::hessian::{
    act_order_perm, damped_inverse_cholesky, mark_dead_columns, permute_symmetric, DampConfig,
    DampReport, Hessian,
};
use super::quant::{Grid, GroupParams, QuantSpec, QuantizedWeight};
use super::{check_matrix, tensor_err};
use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::linalg;
use rayon::prelude::*;

/// GPTQ settings. Defaults: the reference CLI (4 bits, whole-row, asym, no act-order,
/// block 128, percdamp 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqConfig {
    pub bits: u32,
    /// Group size in input columns, `-1` = whole row.
    pub group: i64,
    pub sym: bool,
    pub act_order: bool,
    /// Group params fitted up front on the original weights (see the module notes).
    pub static_groups: bool,
    /// Columns per lazy-batch block (128 in the reference).
    pub block_size: usize,
    pub damp: DampConfig,
}

impl Default for GptqConfig {
    fn default() -> Self {
        GptqConfig {
            bits: 4,
            group: -1,
            sym: false,
            act_order: false,
            static_groups: false,
            block_size: 128,
            damp: DampConfig::default(),
        }
    }
}

impl GptqConfig {
    pub fn spec(&self) -> Result<QuantSpec> {
        let grid = if self.sym {
            Grid::GptqSym
        } else {
            Grid::GptqAsym
        };
        QuantSpec::new(self.bits, self.group, grid)
    }
}

/// What `fasterquant` returns.
#[derive(Clone, Debug)]
pub struct GptqOutput {
    /// Dequantised weight, grid indices, per-(row, group) scales/zeros, `g_idx`.
    pub quantized: QuantizedWeight,
    /// The act-order permutation (`perm[k]` = original column at position k), if used.
    pub perm: Option<Vec<usize>>,
    /// Σ (w - q)² / d² / 2 over all weights (the reference's printed "error").
    pub loss: f64,
    /// Damping used, retries, dead columns.
    pub damp: DampReport,
}

/// Quantises `w` (tensor `name`, `[out, in]`) with the Hessian `h` (`[in, in]`).
pub fn fasterquant(name: &str, w: &Tensor, h: &Hessian, cfg: &GptqConfig) -> Result<GptqOutput> {
    let mut p = prepare(name, w, h, cfg)?;
    let swept = sweep(&mut p);
    Ok(finish(p, swept))
}

/// `fasterquant` with the column sweep on the GPU backend (`backend::gpu::ops::gptq`); the
/// preamble (params, dead columns, act-order, the f64 Cholesky factor) and the epilogue are
/// the host's, shared with the CPU path.
#[cfg(feature = "gpu")]
pub fn fasterquant_gpu(
    gpu: &crate::backend::gpu::Gpu,
    name: &str,
    w: &Tensor,
    h: &Hessian,
    cfg: &GptqConfig,
) -> Result<GptqOutput> {
    use crate::backend::gpu::ops::gptq::{gptq_sweep, GroupMode};
    let p = prepare(name, w, h, cfg)?;
    let (rows, cols, ng) = (p.rows, p.cols, p.ng);
    let mut scales = vec![0f32; rows * ng];
    let mut zeros = vec![0f32; rows * ng];
    let col_group: Vec<u32>;
    let mode = if !p.grouped {
        for (r, q) in p.row_params.iter().enumerate() {
            scales[r] = q.scale;
            zeros[r] = q.zero;
        }
        GroupMode::PerRow
    } else if !p.static_params.is_empty() {
        for (k, q) in p.static_params.iter().enumerate() {
            scales[k] = q.scale;
            zeros[k] = q.zero;
        }
        col_group = (0..cols)
            .map(|c| (p.perm.as_ref().map_or(c, |pm| pm[c]) / p.gw) as u32)
            .collect();
        GroupMode::Static(&col_group)
    } else {
        GroupMode::Dynamic
    };
    let out = gptq_sweep(
        gpu,
        &p.wm,
        &p.u,
        rows,
        cols,
        p.spec,
        mode,
        &scales,
        &zeros,
        p.block_size,
    )
    .map_err(|e| tensor_err(name, e.to_string()))?;
    let swept = Swept {
        values: out.values,
        indices: out.indices.iter().map(|&k| k as u8).collect(),
        scales: out.scales,
        zeros: out.zeros,
        loss: out.row_loss.iter().map(|&l| l as f64).sum(),
    };
    Ok(finish(p, swept))
}

/// The preamble's results: what the column sweep reads.
struct Prepared {
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    grouped: bool,
    gw: usize,
    ng: usize,
    block_size: usize,
    /// W after the dead-column fix, in permuted column order.
    wm: Vec<f32>,
    /// Upper Cholesky factor of the damped H⁻¹ (permuted), f64 rounded to f32.
    u: Vec<f32>,
    /// Whole-row params (`group = -1`), fitted on the untouched W.
    row_params: Vec<GroupParams>,
    /// Static groups: `[rows, ng]` params from the unpermuted W after the dead-column fix.
    static_params: Vec<GroupParams>,
    perm: Option<Vec<usize>>,
    report: DampReport,
}

/// The sweep's results, in permuted column order.
struct Swept {
    values: Vec<f32>,
    indices: Vec<u8>,
    scales: Vec<f32>,
    zeros: Vec<f32>,
    loss: f64,
}

fn prepare(name: &str, w: &Tensor, h: &Hessian, cfg: &GptqConfig) -> Result<Prepared> {
    let spec = cfg.spec()?;
    cfg.damp.validate()?;
    if cfg.block_size == 0 {
        return Err(Error::usage("--block-size", "block size must be positive"));
    }
    let (rows, cols) = check_matrix(name, w)?;
    if h.n() != cols {
        return Err(tensor_err(
            name,
            format!(
                "weight has {cols} inputs but the Hessian is {}x{}",
                h.n(),
                h.n()
            ),
        ));
    }
    super::check_finite(name, h.data())?;

    let grouped = spec.group > 0;
    let gw = spec.group_width(cols);
    let ng = spec.n_groups(cols);
    let mut wm = w.data().to_vec();
    // Whole-row params come from the untouched W (before dead columns are zeroed).
    let row_params: Vec<GroupParams> = if grouped {
        Vec::new()
    } else {
        (0..rows).map(|r| spec.fit(w.row(r))).collect()
    };

    let mut hm = h.data().to_vec();
    let dead = mark_dead_columns(&mut hm, cols, &mut wm, rows);
    let static_params: Vec<GroupParams> = if grouped && cfg.static_groups {
        let mut p = Vec::with_capacity(rows * ng);
        for r in 0..rows {
            for g in 0..ng {
                p.push(spec.fit(&wm[r * cols + g * gw..r * cols + ((g + 1) * gw).min(cols)]));
            }
        }
        p
    } else {
        Vec::new()
    };
    let perm = if cfg.act_order {
        let diag: Vec<f64> = (0..cols).map(|i| hm[i * cols + i]).collect();
        let p = act_order_perm(&diag);
        hm = permute_symmetric(&hm, cols, &p);
        wm = permute_columns(&wm, rows, cols, &p);
        Some(p)
    } else {
        None
    };
    let (u64s, mut report) = damped_inverse_cholesky(name, &hm, cols, &cfg.damp)?;
    report.dead_columns = dead;
    let u: Vec<f32> = u64s.iter().map(|&v| v as f32).collect();
    Ok(Prepared {
        rows,
        cols,
        spec,
        grouped,
        gw,
        ng,
        block_size: cfg.block_size.min(cols),
        wm,
        u,
        row_params,
        static_params,
        perm,
        report,
    })
}

/// The column sweep on the host, block by block (`p.wm` receives the lazy updates).
fn sweep(p: &mut Prepared) -> Swept {
    let (rows, cols, ng, gw, grouped, spec) = (p.rows, p.cols, p.ng, p.gw, p.grouped, p.spec);
    let mut qv = vec![0f32; rows * cols];
    let mut qi = vec![0u8; rows * cols];
    let mut scales = vec![0f32; rows * ng];
    let mut zeros = vec![0f32; rows * ng];
    let mut row_loss = vec![0f64; rows];
    if !grouped {
        for (r, q) in p.row_params.iter().enumerate() {
            scales[r] = q.scale;
            zeros[r] = q.zero;
        }
    }
    let bs = p.block_size;
    let mut err1 = vec![0f32; rows * bs];

    // Legend: rows = out features, cols = in features, [i1, i2) the block, count = i2 - i1.
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + bs).min(cols);
        let count = i2 - i1;
        {
            let wref = &p.wm;
            let u = &p.u;
            let row_params = &p.row_params;
            let static_params = &p.static_params;
            let perm = &p.perm;
            err1.par_chunks_mut(bs)
                .zip(qv.par_chunks_mut(cols))
                .zip(qi.par_chunks_mut(cols))
                .zip(scales.par_chunks_mut(ng).zip(zeros.par_chunks_mut(ng)))
                .zip(row_loss.par_iter_mut())
                .enumerate()
                .for_each(|(r, ((((e1, qrow), irow), (srow, zrow)), loss))| {
                    let wrow = &wref[r * cols..(r + 1) * cols];
                    // W1: this row's block copy, receiving the in-block rank-1 updates.
                    let mut w1 = wrow[i1..i2].to_vec();
                    // The quantiser state persists across blocks: a group may have started
                    // in an earlier block (group size not a multiple of the block size).
                    let maxq = spec.maxq();
                    let mut params = if grouped {
                        let g = i1 / gw;
                        GroupParams {
                            scale: srow[g],
                            zero: zrow[g],
                            maxq,
                        }
                    } else {
                        row_params[r]
                    };
                    for i in 0..count {
                        let c = i1 + i;
                        if !static_params.is_empty() {
                            // The original column's own group, whatever the order.
                            let g = perm.as_ref().map_or(c, |p| p[c]) / gw;
                            params = static_params[r * ng + g];
                            srow[g] = params.scale;
                            zrow[g] = params.zero;
                        } else if grouped && c % gw == 0 {
                            // From the outer W, as `find_params(W[:, c:c+g])`.
                            params = spec.fit(&wrow[c..(c + gw).min(cols)]);
                            srow[c / gw] = params.scale;
                            zrow[c / gw] = params.zero;
                        }
                        let x = w1[i];
                        let q = params.quantize(x);
                        let d = u[c * cols + c];
                        qrow[c] = q;
                        irow[c] = params.index(x);
                        let diff = x - q;
                        *loss += (diff as f64 * diff as f64) / (d as f64 * d as f64) / 2.0;
                        let e = diff / d;
                        let urow = &u[c * cols..(c + 1) * cols];
                        for j in i + 1..count {
                            w1[j] -= e * urow[i1 + j];
                        }
                        e1[i] = e;
                    }
                });
        }
        // Lazy batch update: W[:, i2:] -= Err1[:, :count] · U[i1:i2, i2:].
        if i2 < cols {
            linalg::sub_matmul_f32(
                &mut p.wm[i2..],
                cols,
                &err1,
                bs,
                &p.u[i1 * cols + i2..],
                cols,
                rows,
                count,
                cols - i2,
            );
        }
        i1 = i2;
    }
    Swept {
        values: qv,
        indices: qi,
        scales,
        zeros,
        loss: row_loss.iter().sum(),
    }
}

/// Back to the original column order, with each column's group (`g_idx`).
fn finish(p: Prepared, s: Swept) -> GptqOutput {
    let (rows, cols, gw) = (p.rows, p.cols, p.gw);
    let (mut qv, mut qi) = (s.values, s.indices);
    let mut g_idx: Vec<u32> = (0..cols).map(|c| (c / gw) as u32).collect();
    if let Some(pm) = &p.perm {
        qv = unpermute_columns(&qv, rows, cols, pm);
        qi = unpermute_columns(&qi, rows, cols, pm);
        if p.static_params.is_empty() {
            // Dynamic groups are runs of the permuted order.
            for (k, &j) in pm.iter().enumerate() {
                g_idx[j] = (k / gw) as u32;
            }
        }
    }
    GptqOutput {
        quantized: QuantizedWeight {
            weight: Tensor::new(vec![rows, cols], qv).expect("shape matches data"),
            q: qi,
            scales: s.scales,
            zeros: s.zeros,
            n_groups: p.ng,
            g_idx,
        },
        perm: p.perm,
        loss: s.loss,
        damp: p.report,
    }
}

/// GPTQ's objective for a quantised `q` of `w`: `½·tr((W − Q) H (W − Q)ᵀ)` with the undamped
/// running-mean Hessian `H = 2·XᵀX / sequences`, i.e. the squared error of the layer's outputs
/// summed over tokens and averaged over calibration sequences. In f64. It costs two `rows·n²`
/// products per tensor (this and RTN's), more than the solve's own updates, so each block's product
/// is split over the threads by `gemm`; the blocks' buffers live on the calling thread (with
/// whole blocks in rayon's workers a SmolLM2 run on 8 x 2048 calibration tokens peaked at
/// 2.06 GB RSS instead of 1.66 GB: glibc's per-thread arenas keep what the workers freed).
pub fn output_error(w: &Tensor, q: &Tensor, h: &Hessian) -> f64 {
    let (rows, n) = (w.rows(), w.cols());
    assert_eq!(
        (q.rows(), q.cols(), h.n()),
        (rows, n, n),
        "output_error: shapes"
    );
    let mut total = 0.0;
    for r0 in (0..rows).step_by(OBJECTIVE_ROW_BLOCK) {
        let r1 = (r0 + OBJECTIVE_ROW_BLOCK).min(rows);
        let d: Vec<f64> = (r0..r1)
            .flat_map(|r| w.row(r).iter().zip(q.row(r)).map(|(&a, &b)| (a - b) as f64))
            .collect();
        // H is symmetric, so D·H = D·Hᵀ.
        let dh = linalg::matmul_nt_f64(&d, h.data(), r1 - r0, n, n, true);
        total += d.iter().zip(&dh).map(|(a, b)| a * b).sum::<f64>();
    }
    total / 2.0
}

const OBJECTIVE_ROW_BLOCK: usize = 64;

/// `W[:, perm]` for a row-major `[rows, cols]` matrix.
fn permute_columns<T: Copy + Default>(w: &[T], rows: usize, cols: usize, perm: &[usize]) -> Vec<T> {
    let mut out = vec![T::default(); rows * cols];
    for r in 0..rows {
        for (k, &j) in perm.iter().enumerate() {
            out[r * cols + k] = w[r * cols + j];
        }
    }
    out
}

/// Inverse of [`permute_columns`]: `out[:, perm[k]] = w[:, k]`.
fn unpermute_columns<T: Copy + Default>(
    w: &[T],
    rows: usize,
    cols: usize,
    perm: &[usize],
) -> Vec<T> {
    let mut out = vec![T::default(); rows * cols];
    for r in 0..rows {
        for (k, &j) in perm.iter().enumerate() {
            out[r * cols + j] = w[r * cols + k];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interventions::compress::rtn::rtn;
    use crate::interventions::compress::TestRng;

    /// H from random calibration inputs with correlated features.
    fn hessian(rng: &mut TestRng, n: usize, tokens: usize) -> Hessian {
        let mut h = Hessian::new(n);
        let base = rng.matrix(tokens, n);
        let mut x = base.data().to_vec();
        for t in 0..tokens {
            for j in 1..n {
                x[t * n + j] += 0.5 * x[t * n + j - 1];
            }
        }
        h.add_batch("x", &Tensor::new(vec![tokens, n], x).unwrap())
            .unwrap();
        h
    }

    /// Output reconstruction error tr((W - Q) H (W - Q)ᵀ).
    fn recon(w: &Tensor, q: &Tensor, h: &Hessian) -> f64 {
        let n = h.n();
        let mut tot = 0.0;
        for r in 0..w.rows() {
            let d: Vec<f64> = (0..n).map(|j| (w.row(r)[j] - q.row(r)[j]) as f64).collect();
            for i in 0..n {
                for j in 0..n {
                    tot += d[i] * h.data()[i * n + j] * d[j];
                }
            }
        }
        tot
    }

    #[test]
    fn static_groups_use_the_original_weights_grid() {
        let mut rng = TestRng::new(12);
        let (rows, cols) = (70, 100); // groups of 32: the last is 4 wide
        let w = rng.matrix(rows, cols);
        let h = hessian(&mut rng, cols, 300);
        for act_order in [false, true] {
            let cfg = GptqConfig {
                bits: 3,
                group: 32,
                act_order,
                static_groups: true,
                block_size: 48, // groups straddle blocks
                ..Default::default()
            };
            let out = fasterquant("w", &w, &h, &cfg).unwrap();
            let qw = &out.quantized;
            let base = rtn("w", &w, cfg.spec().unwrap()).unwrap();
            // Every group's grid is round-to-nearest's on the untouched W (no dead columns
            // here), and column j belongs to group j / 32 even with act-order.
            assert_eq!(qw.scales, base.scales, "act_order {act_order}");
            assert_eq!(qw.zeros, base.zeros, "act_order {act_order}");
            assert_eq!(qw.g_idx, base.g_idx, "act_order {act_order}");
            let maxq = cfg.spec().unwrap().maxq();
            for r in 0..rows {
                for c in 0..cols {
                    let p = qw.params(r, c, maxq);
                    assert_eq!(qw.weight.row(r)[c], p.dequant(qw.q[r * cols + c]));
                }
            }
            // Same grid, error feedback on top: the objective falls below RTN's, and the
            // weights differ from RTN's (the solve did something).
            let (eg, er) = (
                output_error(&w, &qw.weight, &h),
                output_error(&w, &base.weight, &h),
            );
            assert!(eg < er, "act_order {act_order}: {eg} >= {er}");
            assert_ne!(qw.q, base.q);
            // Without static groups the grids are refitted on updated weights: they differ.
            let dynamic = fasterquant(
                "w",
                &w,
                &h,
                &GptqConfig {
                    static_groups: false,
                    ..cfg
                },
            )
            .unwrap();
            assert_ne!(dynamic.quantized.scales, base.scales);
        }
    }

    /// The device sweep against the host's on random data, every way of fitting groups: the
    /// grid indices agree on at least `GPU_INDEX_AGREEMENT` of the weights (a flipped index
    /// changes the error fed forward, so an early one can move a few later in its row), scales
    /// and zero points of untouched groups agree, and the objective matches.
    #[cfg(feature = "gpu")]
    #[test]
    fn the_device_sweep_matches_the_host() {
        const GPU_INDEX_AGREEMENT: f64 = 0.999;
        const LOSS_TOL: f64 = 1e-3;
        use crate::backend::gpu::testutil::with_gpu;
        with_gpu("gptq sweep", |gpu| {
            let mut rng = TestRng::new(23);
            let (rows, cols) = (48, 200);
            let w = rng.matrix(rows, cols);
            let h = hessian(&mut rng, cols, 300);
            let cases = [
                (-1, false, false, false),
                (64, false, false, false),
                (48, true, false, true),
                (64, true, true, false),
                (32, false, true, true),
            ];
            for (group, act_order, static_groups, sym) in cases {
                let cfg = GptqConfig {
                    bits: 4,
                    group,
                    sym,
                    act_order,
                    static_groups,
                    block_size: 40,
                    ..Default::default()
                };
                let what = format!("group {group} act {act_order} static {static_groups}");
                let host = fasterquant("w", &w, &h, &cfg).unwrap();
                let dev = fasterquant_gpu(gpu, "w", &w, &h, &cfg).unwrap();
                let (a, b) = (&dev.quantized, &host.quantized);
                assert_eq!(a.g_idx, b.g_idx, "{what}");
                let same = a.q.iter().zip(&b.q).filter(|(x, y)| x == y).count();
                let share = same as f64 / b.q.len() as f64;
                assert!(
                    share >= GPU_INDEX_AGREEMENT,
                    "{what}: {same} of {} indices agree",
                    b.q.len()
                );
                // Values follow indices through the same scale and zero point.
                for (k, (x, y)) in a.weight.data().iter().zip(b.weight.data()).enumerate() {
                    if a.q[k] == b.q[k] {
                        assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{what}: value {k}");
                    }
                }
                let rel = (dev.loss - host.loss).abs() / host.loss;
                assert!(
                    rel <= LOSS_TOL,
                    "{what}: loss {} vs {}",
                    dev.loss,
                    host.loss
                );
                assert!(host.loss > 0.0);
            }
        });
    }

    #[test]
    fn beats_rtn_and_respects_the_grid() {
        let mut rng = TestRng::new(11);
        let (rows, cols) = (16, 96);
        let w = rng.matrix(rows, cols);
        let h = hessian(&mut rng, cols, 200);
        for (group, act_order) in [(-1, false), (32, false), (32, true), (-1, true)] {
            let cfg = GptqConfig {
                bits: 3,
                group,
                sym: true,
                act_order,
                block_size: 40,
                ..Default::default()
            };
            let out = fasterquant("w", &w, &h, &cfg).unwrap();
            let qw = &out.quantized;
            let base = rtn("w", &w, cfg.spec().unwrap()).unwrap();
            let (eg, er) = (recon(&w, &qw.weight, &h), recon(&w, &base.weight, &h));
            // The recorded objective is half the slow triple loop's.
            for (fast, slow) in [
                (output_error(&w, &qw.weight, &h), eg),
                (output_error(&w, &base.weight, &h), er),
            ] {
                assert!(
                    (fast - slow / 2.0).abs() <= 1e-10 * slow,
                    "{fast} vs {slow}/2"
                );
            }
            assert!(
                eg < er,
                "group {group} act {act_order}: gptq {eg} >= rtn {er}"
            );
            let maxq = cfg.spec().unwrap().maxq();
            for r in 0..rows {
                for c in 0..cols {
                    let p = qw.params(r, c, maxq);
                    assert_eq!(
                        qw.weight.data()[r * cols + c],
                        p.dequant(qw.q[r * cols + c])
                    );
                }
                for g in 0..qw.n_groups {
                    let mut v: Vec<u8> = (0..cols)
                        .filter(|&c| qw.g_idx[c] as usize == g)
                        .map(|c| qw.q[r * cols + c])
                        .collect();
                    v.sort();
                    v.dedup();
                    assert!(v.len() <= 8);
                }
            }
            assert!(out.loss > 0.0 && out.loss.is_finite());
        }
    }

    #[test]
    fn block_size_does_not_change_the_math() {
        // Lazy batching is an exact reorganisation of the same updates: results agree up to
        // f32 summation order (tolerance: a few ulps of the weights' O(1) magnitude).
        let mut rng = TestRng::new(5);
        let w = rng.matrix(8, 64);
        let h = hessian(&mut rng, 64, 100);
        let run = |bs| {
            let cfg = GptqConfig {
                bits: 8,
                block_size: bs,
                ..Default::default()
            };
            fasterquant("w", &w, &h, &cfg).unwrap().quantized
        };
        let (a, b) = (run(64), run(16));
        let same = a.q.iter().zip(&b.q).filter(|(x, y)| x == y).count();
        assert!(same >= a.q.len() - 2, "{same}/{}", a.q.len());
    }

    #[test]
    fn dead_columns_and_validation() {
        let mut rng = TestRng::new(2);
        let w = rng.matrix(4, 8);
        let mut x = rng.matrix(20, 8).into_data();
        for t in 0..20 {
            x[t * 8 + 3] = 0.0;
        }
        let mut h = Hessian::new(8);
        h.add_batch("x", &Tensor::new(vec![20, 8], x).unwrap())
            .unwrap();
        let out = fasterquant("w", &w, &h, &GptqConfig::default()).unwrap();
        assert_eq!(out.damp.dead_columns, vec![3]);
        for r in 0..4 {
            // Dead column quantises the zeroed weight: exactly 0 on the asym grid (0 is a node).
            assert_eq!(out.quantized.weight.row(r)[3], 0.0);
        }
        let bad = GptqConfig {
            bits: 1,
            ..Default::default()
        };
        assert!(fasterquant("w", &w, &h, &bad).is_err());
        let e = fasterquant("w", &rng.matrix(4, 9), &h, &GptqConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`w`") && e.contains("Hessian"), "{e}");
        let mut hn = h.data().to_vec();
        hn[0] = f64::NAN;
        assert!(Hessian::from_data("h", 8, hn, 1).is_err());
    }

    /// Prints the time of GPTQ 4-bit g64 on 1536x576 and 576x1536 with a random SPD H.
    fn timing_report() {
        let mut rng = TestRng::new(9);
        for (rows, cols) in [(1536, 576), (576, 1536)] {
            let w = rng.matrix(rows, cols);
            let h = hessian(&mut rng, cols, 2 * cols);
            let cfg = GptqConfig {
                bits: 4,
                group: 64,
                sym: true,
                act_order: true,
                ..Default::default()
            };
            let t = std::time::Instant::now();
            let out = fasterquant("w", &w, &h, &cfg).unwrap();
            println!(
                "gptq 4-bit g64 act-order {rows}x{cols}: {:.3} s (loss {:.3e})",
                t.elapsed().as_secs_f64(),
                out.loss
            );
        }
    }

    #[test]
    fn timing_printed() {
        // Timing is printed, not asserted (`cargo test --release --lib gptq -- --nocapture`);
        // the test still fails if either size errors.
        timing_report();
    }
}
