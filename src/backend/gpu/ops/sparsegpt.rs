//! SparseGPT's column sweep on the device (`shaders/sparsegpt.wgsl`): per block the OBS
//! scores, the mask (the unstructured threshold is picked on the host from the block's
//! scores, one `rows × block` download; N:M is chosen in the shader per row), the in-block
//! error feedback and the lazy batch update, between the preamble and epilogue of the CPU
//! oracle `interventions::compress::sparsegpt::fasterprune`. Bound: the scores of the first
//! block and every mask decision taken on the same weights are the CPU's; the updates' sums run
//! in another order, so a near-tie late in the sweep can fall the other way.

use bytemuck::{Pod, Zeroable};

use super::gptq::ObsBuffers;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};
use crate::interventions::compress::mask::{inclusive_threshold, SparsityPattern};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    i1: u32,
    count: u32,
    bs: u32,
    n: u32,
    m: u32,
    nm: u32,
    thresh: f32,
    _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<Params>() == 48);

const OP: &str = "sparsegpt_sweep";

/// The pruned weight (`[rows, cols]`), its mask (`true` = pruned) and Σ (w - q)² / d² / 2
/// per row.
pub struct PrunedSweep {
    pub weight: Vec<f32>,
    pub mask: Vec<bool>,
    pub row_loss: Vec<f32>,
}

/// Sweeps `w` (`[rows, cols]`, dead columns already zeroed) with `u`, the upper Cholesky
/// factor of H⁻¹ as f32 (`[cols, cols]`).
pub fn sparsegpt_sweep(
    gpu: &Gpu,
    w: &[f32],
    u: &[f32],
    rows: usize,
    cols: usize,
    pattern: SparsityPattern,
    block_size: usize,
) -> GpuResult<PrunedSweep> {
    let b = ObsBuffers::new(gpu, OP, w, u, rows, cols, block_size)?;
    let bs = b.bs;
    let (n, m, nm) = match pattern {
        SparsityPattern::NM { n, m } => {
            if m == 0 || n >= m || !bs.is_multiple_of(m) || !cols.is_multiple_of(m) {
                return Err(GpuError::shape(
                    OP,
                    format!("{n}:{m} needs n < m and the block ({bs}) and width ({cols}) multiples of m"),
                ));
            }
            (n as u32, m as u32, 1)
        }
        SparsityPattern::Unstructured(_) => (0, 1, 0),
    };
    let mask = GpuTensor::zeros(gpu, &[rows, cols])?;
    let scores = GpuTensor::zeros(gpu, &[rows, bs])?;
    let wg = gpu.tuning().wg;
    let key = |entry| KernelKey {
        shader: Shader::Sparsegpt,
        entry,
        subs: vec![("WG", wg)],
    };
    let (score_key, block_key) = (key("obs_scores"), key("sparsegpt_block"));
    let mut i1 = 0;
    while i1 < cols {
        let count = bs.min(cols - i1);
        let mut p = Params {
            rows: rows as u32,
            cols: cols as u32,
            i1: i1 as u32,
            count: count as u32,
            bs: bs as u32,
            n,
            m,
            nm,
            thresh: 0.0,
            _pad: [0; 3],
        };
        if let SparsityPattern::Unstructured(s) = pattern {
            gpu.launch_bound(
                OP,
                &score_key,
                &[
                    (0, b.w.single(OP, "w")?),
                    (1, b.u.single(OP, "u")?),
                    (3, scores.single(OP, "scores")?),
                ],
                10,
                bytemuck::bytes_of(&p),
                groups(rows * count, wg),
            )?;
            let all = scores.download(gpu)?;
            let block: Vec<f32> = all
                .chunks(bs)
                .flat_map(|row| row[..count].iter().copied())
                .collect();
            p.thresh = inclusive_threshold(&block, s);
        }
        let meta = bytemuck::bytes_of(&p);
        gpu.launch_bound(
            OP,
            &block_key,
            &[
                (0, b.w.single(OP, "w")?),
                (1, b.u.single(OP, "u")?),
                (2, mask.single(OP, "mask")?),
                (3, scores.single(OP, "scores")?),
                (6, b.w1.single(OP, "w1")?),
                (7, b.err.single(OP, "err")?),
                (8, b.loss.single(OP, "loss")?),
            ],
            10,
            meta,
            groups(rows, wg),
        )?;
        b.update(gpu, Shader::Sparsegpt, meta, cols - i1 - count)?;
        i1 += count;
    }
    Ok(PrunedSweep {
        weight: b.w.download(gpu)?,
        mask: mask.download(gpu)?.iter().map(|&v| v != 0.0).collect(),
        row_loss: b.loss.download(gpu)?,
    })
}
