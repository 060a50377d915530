//! Token embedding gather from a `[V, C]` table that may span several buffers (a 128k x 4096
//! f32 table is 2 GiB, past every binding limit): one dispatch per chunk, each writing the
//! rows whose ids fall in it.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::buffer::upload_u32;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    tokens: u32,
    c: u32,
    r0: u32,
    rows: u32,
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "embedding";

/// Writes the table rows of `ids` into `out` (`[T, C]`). Ids are checked against V.
pub fn embed(gpu: &Gpu, table: &GpuTensor, ids: &[u32], out: &GpuTensor) -> GpuResult<()> {
    let (v, c) = (table.rows(), table.cols());
    expect_len(OP, "out", out.numel(), ids.len() * c)?;
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= v) {
        return Err(GpuError::shape(
            OP,
            format!("token id {bad} is outside the vocabulary of {v}"),
        ));
    }
    u32_of(OP, "out", out.numel())?;
    u32_of(OP, "vocabulary", v)?;
    if ids.is_empty() || c == 0 {
        return Ok(());
    }
    let id_buf = upload_u32(gpu, OP, ids)?;
    let out_buf = out.single(OP, "out")?;
    let wg = gpu.tuning().wg;
    let key = KernelKey {
        shader: Shader::Embedding,
        entry: "gather",
        subs: vec![("WG", wg)],
    };
    for chunk in &table.chunks {
        // Skip chunks no id falls in: a short prompt touches one or two of them.
        let (lo, hi) = (chunk.row0, chunk.row0 + chunk.rows);
        if !ids.iter().any(|&t| (lo..hi).contains(&(t as usize))) {
            continue;
        }
        let p = Params {
            tokens: ids.len() as u32,
            c: c as u32,
            r0: chunk.row0 as u32,
            rows: chunk.rows as u32,
        };
        gpu.launch(
            OP,
            &key,
            &[&chunk.buf, &id_buf, out_buf],
            bytemuck::bytes_of(&p),
            groups(ids.len() * c, wg),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::embedding::embed as cpu_embed;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::testutil::with_gpu;

    fn trial(gpu: &Gpu, rng: &mut Rng, v: usize, c: usize, ids: &[u32]) -> usize {
        let table = rng.vec(v * c, 1.0);
        let mut want = vec![0.0; ids.len() * c];
        cpu_embed(&table, c, ids, &mut want);
        let gt = GpuTensor::upload(gpu, &[v, c], &table).unwrap();
        let go = GpuTensor::zeros(gpu, &[ids.len(), c]).unwrap();
        embed(gpu, &gt, ids, &go).unwrap();
        // A copy: bit-identical.
        assert_eq!(go.download(gpu).unwrap(), want, "V {v} C {c}");
        assert_eq!(gt.download(gpu).unwrap(), table, "round trip V {v} C {c}");
        gt.chunk_count()
    }

    #[test]
    fn gathers_from_single_and_chunked_tables() {
        with_gpu("embedding", |gpu| {
            let mut rng = Rng::new(51);
            assert_eq!(trial(gpu, &mut rng, 5, 3, &[4, 0, 4]), 1);
            // 101 rows of 7 in chunks of 8 rows: 13 chunks; ids in the first, last and middle.
            gpu.set_chunk_bytes(8 * 7 * 4);
            let n = trial(gpu, &mut rng, 101, 7, &[100, 0, 57, 8, 7, 100, 64]);
            assert_eq!(n, 13);
            let t = GpuTensor::zeros(gpu, &[5, 3]).unwrap();
            let o = GpuTensor::zeros(gpu, &[1, 3]).unwrap();
            let e = embed(gpu, &t, &[5], &o).unwrap_err();
            assert!(e.to_string().contains("outside the vocabulary"), "{e}");
        });
    }

    /// Past the adapter's real binding limit (128 MiB on lavapipe): a 34k x 1024 f32 table
    /// (139 MB) must be split by the upload and gathered across the split.
    #[test]
    fn gathers_past_the_real_binding_limit() {
        with_gpu("embedding large", |gpu| {
            let c = 1024;
            let limit = gpu.max_chunk_bytes();
            if limit > 512 << 20 {
                eprintln!("skipping: the adapter binds {limit} bytes, too many to exceed here");
                return;
            }
            let v = (limit / (c as u64 * 4)) as usize + 1000;
            let table: Vec<f32> = (0..v * c).map(|i| (i % 9973) as f32).collect();
            let gt = GpuTensor::upload(gpu, &[v, c], &table).unwrap();
            assert!(gt.chunk_count() >= 2);
            let ids = [0u32, (v - 1) as u32, (v - 1000) as u32, (v - 1001) as u32];
            let go = GpuTensor::zeros(gpu, &[ids.len(), c]).unwrap();
            embed(gpu, &gt, &ids, &go).unwrap();
            let mut want = vec![0.0; ids.len() * c];
            cpu_embed(&table, c, &ids, &mut want);
            assert_eq!(go.download(gpu).unwrap(), want);
        });
    }
}
