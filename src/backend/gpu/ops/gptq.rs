//! GPTQ's column sweep on the device (`shaders/gptq.wgsl`): the block-by-block quantisation
//! with in-block error feedback and the lazy batch update of the later columns, as the CPU
//! oracle `interventions::compress::gptq::fasterquant` does between its preamble (params,
//! dead columns, act-order, the f64 Cholesky factor, all on the host) and its epilogue.
//! Bound: a column's grid index equals the CPU's whenever the weight reaching it does; the
//! updates' sums run in another order (and may be fused), so a few indices late in a row can
//! differ (`interventions::compress::gptq` tests count them).

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::buffer::upload_u32;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};
use crate::interventions::compress::quant::{Grid, QuantSpec};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    i1: u32,
    count: u32,
    bs: u32,
    gw: u32,
    ng: u32,
    mode: u32,
    grid: u32,
    maxq: f32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 48);

const OP: &str = "gptq_sweep";

/// Where each column's grid parameters come from.
pub enum GroupMode<'a> {
    /// One set per row, prefilled in `scales`/`zeros` (`[rows, 1]`).
    PerRow,
    /// Refitted at every group's first column from the swept weights.
    Dynamic,
    /// Prefilled per (row, group); `col_group[c]` is the group of (permuted) column `c`.
    Static(&'a [u32]),
}

/// The sweep's inputs and results on the host: `w` `[rows, cols]` (permuted order), `u` the
/// upper Cholesky factor of H⁻¹ `[cols, cols]` as f32, `scales`/`zeros` `[rows, n_groups]`
/// (prefilled for `PerRow`/`Static`, written for `Dynamic`).
pub struct SweepOutput {
    pub values: Vec<f32>,
    pub indices: Vec<f32>,
    pub scales: Vec<f32>,
    pub zeros: Vec<f32>,
    /// Σ (w - q)² / d² / 2 per row.
    pub row_loss: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
pub fn gptq_sweep(
    gpu: &Gpu,
    w: &[f32],
    u: &[f32],
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    mode: GroupMode,
    scales: &[f32],
    zeros: &[f32],
    block_size: usize,
) -> GpuResult<SweepOutput> {
    spec.validate()
        .map_err(|e| GpuError::shape(OP, e.to_string()))?;
    let grid = match spec.grid {
        Grid::GptqAsym => 0,
        Grid::GptqSym => 1,
        Grid::Awq => return Err(GpuError::shape(OP, "GPTQ sweeps use a GPTQ grid")),
    };
    let (gw, ng) = (spec.group_width(cols).max(1), spec.n_groups(cols));
    expect_len(OP, "scales", scales.len(), rows * ng)?;
    expect_len(OP, "zeros", zeros.len(), rows * ng)?;
    let (mode_id, col_group): (u32, &[u32]) = match mode {
        GroupMode::PerRow => (0, &[]),
        GroupMode::Dynamic => (1, &[]),
        GroupMode::Static(g) => {
            expect_len(OP, "col_group", g.len(), cols)?;
            if let Some(c) = g.iter().position(|&x| x as usize >= ng) {
                return Err(GpuError::shape(
                    OP,
                    format!("column {c} names group {} of {ng}", g[c]),
                ));
            }
            (2, g)
        }
    };
    let b = ObsBuffers::new(gpu, OP, w, u, rows, cols, block_size)?;
    let bs = b.bs;
    let qv = GpuTensor::zeros(gpu, &[rows, cols])?;
    let qi = GpuTensor::zeros(gpu, &[rows, cols])?;
    let gs = GpuTensor::upload(gpu, &[rows, ng], scales)?;
    let gz = GpuTensor::upload(gpu, &[rows, ng], zeros)?;
    let cg = upload_u32(gpu, OP, col_group)?;
    let wg = gpu.tuning().wg;
    let key = |entry| KernelKey {
        shader: Shader::Gptq,
        entry,
        subs: vec![("WG", wg)],
    };
    let block_key = key("gptq_block");
    let mut i1 = 0;
    while i1 < cols {
        let count = bs.min(cols - i1);
        let p = Params {
            rows: rows as u32,
            cols: cols as u32,
            i1: i1 as u32,
            count: count as u32,
            bs: bs as u32,
            gw: gw as u32,
            ng: ng as u32,
            mode: mode_id,
            grid,
            maxq: spec.maxq(),
            _pad: [0; 2],
        };
        let meta = bytemuck::bytes_of(&p);
        gpu.launch_bound(
            OP,
            &block_key,
            &[
                (0, b.w.single(OP, "w")?),
                (1, b.u.single(OP, "u")?),
                (2, qv.single(OP, "values")?),
                (3, qi.single(OP, "indices")?),
                (4, gs.single(OP, "scales")?),
                (5, gz.single(OP, "zeros")?),
                (6, b.w1.single(OP, "w1")?),
                (7, b.err.single(OP, "err")?),
                (8, b.loss.single(OP, "loss")?),
                (9, &cg),
            ],
            10,
            meta,
            groups(rows, wg),
        )?;
        b.update(gpu, Shader::Gptq, meta, cols - i1 - count)?;
        i1 += count;
    }
    Ok(SweepOutput {
        values: qv.download(gpu)?,
        indices: qi.download(gpu)?,
        scales: gs.download(gpu)?,
        zeros: gz.download(gpu)?,
        row_loss: b.loss.download(gpu)?,
    })
}

/// What both column sweeps (GPTQ, SparseGPT) keep on the device: W (updated in place), U,
/// the block copy, the block's errors and the per-row losses, at the bindings
/// `obs_update.wgsl` expects (0, 1, 6, 7, 8).
pub(super) struct ObsBuffers {
    pub w: GpuTensor,
    pub u: GpuTensor,
    pub w1: GpuTensor,
    pub err: GpuTensor,
    pub loss: GpuTensor,
    pub rows: usize,
    /// Block size, at most `cols`.
    pub bs: usize,
}

impl ObsBuffers {
    pub(super) fn new(
        gpu: &Gpu,
        op: &'static str,
        w: &[f32],
        u: &[f32],
        rows: usize,
        cols: usize,
        block_size: usize,
    ) -> GpuResult<ObsBuffers> {
        if rows == 0 || cols == 0 || block_size == 0 {
            return Err(GpuError::shape(
                op,
                format!("empty sweep: {rows}x{cols}, block {block_size}"),
            ));
        }
        expect_len(op, "w", w.len(), rows * cols)?;
        expect_len(op, "u", u.len(), cols * cols)?;
        u32_of(op, "u", cols * cols)?;
        u32_of(op, "w", rows * cols)?;
        let bs = block_size.min(cols);
        Ok(ObsBuffers {
            w: GpuTensor::upload(gpu, &[rows, cols], w)?,
            u: GpuTensor::upload(gpu, &[cols, cols], u)?,
            w1: GpuTensor::zeros(gpu, &[rows, bs])?,
            err: GpuTensor::zeros(gpu, &[rows, bs])?,
            loss: GpuTensor::zeros(gpu, &[rows])?,
            rows,
            bs,
        })
    }

    /// The lazy batch update after a swept block (`obs_update`, appended to `shader`):
    /// `W[:, i2:] -= Err · U[i1:i2, i2:]` over the `tail` columns after the block, `meta` the
    /// including shader's params.
    pub(super) fn update(
        &self,
        gpu: &Gpu,
        shader: Shader,
        meta: &[u8],
        tail: usize,
    ) -> GpuResult<()> {
        if tail == 0 {
            return Ok(());
        }
        let wg = gpu.tuning().wg;
        let key = KernelKey {
            shader,
            entry: "obs_update",
            subs: vec![("WG", wg)],
        };
        gpu.launch_bound(
            "obs_update",
            &key,
            &[
                (0, self.w.single("obs_update", "w")?),
                (1, self.u.single("obs_update", "u")?),
                (7, self.err.single("obs_update", "err")?),
            ],
            10,
            meta,
            groups(self.rows * tail, wg),
        )
    }
}
