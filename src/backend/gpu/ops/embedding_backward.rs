//! Embedding backward, as the CPU `train::embedding::embedding_backward`: `d_table[ids[t]] +=
//! dx[t]` with repeated ids adding up. Deterministic without float atomics: the host sorts the
//! token positions by id and each invocation owns one (id, column) element, adding in token
//! order, which is the CPU's order, so the two agree bit for bit. `d_table` may be chunked by
//! rows like the table it belongs to.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::buffer::upload_u32;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    c: u32,
    u0: u32,
    n_ids: u32,
    r0: u32,
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "embedding_backward";

/// Token positions grouped by id: distinct ids ascending, CSR offsets, positions.
fn group_by_id(ids: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    // Stable: positions of one id stay in token order.
    order.sort_by_key(|&t| ids[t as usize]);
    let (mut uids, mut offs) = (Vec::new(), Vec::new());
    for (i, &t) in order.iter().enumerate() {
        let id = ids[t as usize];
        if uids.last() != Some(&id) {
            uids.push(id);
            offs.push(i as u32);
        }
    }
    offs.push(order.len() as u32);
    (uids, offs, order)
}

/// Adds each row of `dx` (`[T, C]`) into the row of `d_table` (`[V, C]`) its token names.
pub fn embedding_backward(
    gpu: &Gpu,
    dx: &GpuTensor,
    ids: &[u32],
    d_table: &GpuTensor,
) -> GpuResult<()> {
    let (v, c) = (d_table.rows(), d_table.cols());
    expect_len(OP, "dx", dx.numel(), ids.len() * c)?;
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= v) {
        return Err(GpuError::shape(
            OP,
            format!("token id {bad} is outside the vocabulary of {v}"),
        ));
    }
    u32_of(OP, "dx", dx.numel())?;
    u32_of(OP, "vocabulary", v)?;
    if ids.is_empty() || c == 0 {
        return Ok(());
    }
    let (uids, offs, pos) = group_by_id(ids);
    let bufs = [
        upload_u32(gpu, OP, &uids)?,
        upload_u32(gpu, OP, &offs)?,
        upload_u32(gpu, OP, &pos)?,
    ];
    let dxb = dx.single(OP, "dx")?;
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::EmbeddingBackward,
        entry: "scatter_rows",
        subs: vec![("WG", wg)],
    };
    for chunk in &d_table.chunks {
        // The sorted ids inside this chunk's rows form one contiguous range.
        let (lo, hi) = (chunk.row0 as u32, (chunk.row0 + chunk.rows) as u32);
        let u0 = uids.partition_point(|&id| id < lo);
        let u1 = uids.partition_point(|&id| id < hi);
        if u0 == u1 {
            continue;
        }
        u32_of(OP, "chunk", (u1 - u0) * c)?;
        let p = Params {
            c: c as u32,
            u0: u0 as u32,
            n_ids: (u1 - u0) as u32,
            r0: lo,
        };
        gpu.launch(
            OP,
            &key,
            &[dxb, &bufs[0], &bufs[1], &bufs[2], &chunk.buf],
            bytemuck::bytes_of(&p),
            groups((u1 - u0) * c, wg),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::train::embedding::embedding_backward as cpu_backward;

    fn trial(gpu: &Gpu, rng: &mut Rng, v: usize, c: usize, ids: &[u32], chunk: Option<u64>) {
        let dx = rng.vec(ids.len() * c, 1.0);
        let d0 = rng.vec(v * c, 1.0);
        let mut want = d0.clone();
        cpu_backward(&dx, ids, c, &mut want);
        let gdx = GpuTensor::upload(gpu, &[ids.len(), c], &dx).unwrap();
        if let Some(b) = chunk {
            gpu.set_chunk_bytes(b);
        }
        let gd = GpuTensor::upload(gpu, &[v, c], &d0).unwrap();
        gpu.set_chunk_bytes(gpu.max_chunk_bytes());
        embedding_backward(gpu, &gdx, ids, &gd).unwrap();
        // The same additions in the same order: bit-identical, not merely close.
        assert_eq!(
            gd.download(gpu).unwrap(),
            want,
            "embedding backward V {v} C {c} {} tokens, {} chunks",
            ids.len(),
            gd.chunk_count()
        );
    }

    #[test]
    fn matches_cpu_bit_for_bit_with_repeats_and_chunks() {
        with_gpu("embedding backward", |gpu| {
            let mut rng = Rng::new(141);
            trial(gpu, &mut rng, 5, 3, &[4, 0, 4, 2], None);
            // Many repeats of few ids, and ids spread over a 1031-row table.
            let ids: Vec<u32> = (0..97).map(|i| (i * i % 7) as u32).collect();
            trial(gpu, &mut rng, 11, 67, &ids, None);
            let ids: Vec<u32> = (0..301).map(|i| ((i * 7919) % 1031) as u32).collect();
            trial(gpu, &mut rng, 1031, 13, &ids, None);
            // 1031 rows of 13 floats in chunks of 100 rows: 11 chunks, ids hitting most.
            trial(gpu, &mut rng, 1031, 13, &ids, Some(100 * 13 * 4));
        });
    }

    #[test]
    fn rejects_ids_outside_the_vocabulary() {
        with_gpu("embedding backward shapes", |gpu| {
            let dx = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            let d = GpuTensor::zeros(gpu, &[4, 3]).unwrap();
            let e = embedding_backward(gpu, &dx, &[1, 4], &d).unwrap_err();
            assert!(e.to_string().contains("token id 4"), "{e}");
            assert!(embedding_backward(gpu, &dx, &[1], &d).is_err());
        });
    }
}
