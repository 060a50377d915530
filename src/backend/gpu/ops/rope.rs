//! Rotary embeddings (HF `rotate_half` layout) in place on `[M, heads * D]` rows, or on a
//! column window of wider rows (q or k inside the fused qkv projection). The per-row cos/sin
//! are gathered on the host from the CPU backend's `RopeTable`, uploaded once per batch of
//! positions and shared by every layer.

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::backend::cpu::rope::RopeTable;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    half: u32,
    stride: u32,
    offset: u32,
    _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<Params>() == 32);

const OP: &str = "rope";

/// cos/sin for a list of row positions, on the device.
pub struct RopeRows {
    cos: GpuTensor,
    sin: GpuTensor,
    rows: usize,
    half: usize,
}

impl RopeRows {
    pub fn new(gpu: &Gpu, table: &RopeTable, pos: &[usize]) -> GpuResult<RopeRows> {
        Self::signed(gpu, table, pos, false)
    }

    /// The rows for the backward: a rotation's transpose is the rotation by the opposite
    /// angle, so `rope` with these tables maps `dy` to `dx` (as `train::rope::Rotary::backward`).
    pub fn inverse(gpu: &Gpu, table: &RopeTable, pos: &[usize]) -> GpuResult<RopeRows> {
        Self::signed(gpu, table, pos, true)
    }

    fn signed(gpu: &Gpu, table: &RopeTable, pos: &[usize], negate: bool) -> GpuResult<RopeRows> {
        let half = table.head_dim() / 2;
        let mut cos = vec![0.0f32; pos.len() * half];
        let mut sin = vec![0.0f32; pos.len() * half];
        if half > 0 {
            for ((&p, c), s) in pos
                .iter()
                .zip(cos.chunks_exact_mut(half))
                .zip(sin.chunks_exact_mut(half))
            {
                table.cos_sin_at(p, c, s);
            }
        }
        if negate {
            // Negation is exact: the backward rotates by bit-for-bit the opposite angle.
            sin.iter_mut().for_each(|v| *v = -*v);
        }
        Ok(RopeRows {
            cos: GpuTensor::upload(gpu, &[pos.len(), half], &cos)?,
            sin: GpuTensor::upload(gpu, &[pos.len(), half], &sin)?,
            rows: pos.len(),
            half,
        })
    }
}

/// Rotates `heads` heads starting at column `offset` of every row of `x` (row r at position
/// `rows.pos[r]`).
pub fn rope(
    gpu: &Gpu,
    x: &GpuTensor,
    offset: usize,
    heads: usize,
    rows: &RopeRows,
) -> GpuResult<()> {
    let stride = x.cols();
    let d = 2 * rows.half;
    if x.rows() != rows.rows || offset + heads * d > stride {
        return Err(GpuError::shape(
            OP,
            format!(
                "x {:?} has no room for {heads} heads of {d} at column {offset} on {} rows",
                x.shape(),
                rows.rows
            ),
        ));
    }
    u32_of(OP, "x", x.numel())?;
    let p = Params {
        rows: rows.rows as u32,
        heads: heads as u32,
        half: rows.half as u32,
        stride: stride as u32,
        offset: offset as u32,
        _pad: [0; 3],
    };
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::Rope,
        entry: "rope",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[
            x.single(OP, "x")?,
            rows.cos.single(OP, "cos")?,
            rows.sin.single(OP, "sin")?,
        ],
        bytemuck::bytes_of(&p),
        groups(rows.rows * heads * rows.half, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;

    #[test]
    fn matches_cpu_in_and_beyond_the_table_and_on_a_window() {
        with_gpu("rope", |gpu| {
            let mut rng = Rng::new(61);
            let (d, heads) = (14, 3);
            let table = RopeTable::new(d, 10000.0, None, 40);
            let pos = [0usize, 1, 39, 40, 1000, 7, 13];
            // A window: 5 leading columns, 3 heads of 14, 4 trailing ones.
            let width = 5 + heads * d + 4;
            let x = rng.vec(pos.len() * width, 1.0);
            let mut want = x.clone();
            for (row, &p) in want.chunks_exact_mut(width).zip(&pos) {
                for head in row[5..5 + heads * d].chunks_exact_mut(d) {
                    table.rotate(head, p);
                }
            }
            let gx = GpuTensor::upload(gpu, &[pos.len(), width], &x).unwrap();
            let rows = RopeRows::new(gpu, &table, &pos).unwrap();
            rope(gpu, &gx, 5, heads, &rows).unwrap();
            tol::EXACTISH
                .check("rope", &gx.download(gpu).unwrap(), &want)
                .unwrap();
            assert!(rope(gpu, &gx, 10, heads, &rows).is_err());
        });
    }

    #[test]
    fn inverse_rows_give_the_training_backward() {
        with_gpu("rope backward", |gpu| {
            use crate::model::LlamaConfig;
            use crate::train::rope::Rotary;
            let mut rng = Rng::new(62);
            // The variant fixture has llama3 rope scaling, so scaled frequencies are covered.
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/tiny/hf_variant/config.json");
            let mut cfg =
                LlamaConfig::from_json_bytes(&std::fs::read(&path).unwrap(), &path).unwrap();
            let (d, heads) = (22, 3);
            cfg.head_dim = d;
            let pos = [0usize, 5, 69, 2, 41];
            let rot = Rotary::new(&cfg, 70);
            let table = RopeTable::new(d, cfg.rope_theta, cfg.rope_scaling.as_ref(), 128);
            let dy = rng.vec(pos.len() * heads * d, 1.0);
            let mut want = dy.clone();
            rot.backward(&mut want, &pos);
            let g = GpuTensor::upload(gpu, &[pos.len(), heads * d], &dy).unwrap();
            let rows = RopeRows::inverse(gpu, &table, &pos).unwrap();
            rope(gpu, &g, 0, heads, &rows).unwrap();
            tol::EXACTISH
                .check("rope backward", &g.download(gpu).unwrap(), &want)
                .unwrap();
        });
    }
}
