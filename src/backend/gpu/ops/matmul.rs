//! The linear layer `y[M, N] (+)= x[M, K] W[N, K]^T (+ b)` (PyTorch's `[out, in]` weights, as
//! the CPU `matmul::linear`). W may be chunked by rows (an LM head larger than one binding):
//! each chunk fills its own range of output columns.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::device::Tuning;
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor, MatmulTile};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    k: u32,
    n: u32,
    n0: u32,
    n_len: u32,
    flags: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 32);

const OP: &str = "linear";

/// `y = x W^T (+ bias)`, or `y += ...` with `accumulate`. Shapes: x `[M, K]`, w `[N, K]`,
/// bias `[N]`, y `[M, N]` (any leading dims, viewed as matrices). Where K % 4 == 0 runs the
/// adapter's tiled kernel if it has one, else the vec4 register-blocked one; otherwise the
/// scalar register-blocked one.
pub fn linear(
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    y: &GpuTensor,
    accumulate: bool,
) -> GpuResult<()> {
    linear_with(gpu, x, w, bias, y, accumulate, gpu.tuning())
}

/// [`linear`] under the caller's tuning instead of the adapter's: tests run the tiled kernel on
/// adapters whose tuning does not pick it, and the register kernels at several blocks.
pub(crate) fn linear_with(
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    y: &GpuTensor,
    accumulate: bool,
    t: Tuning,
) -> GpuResult<()> {
    let (m, k) = (x.rows(), x.cols());
    let n = w.rows();
    if w.cols() != k {
        return Err(GpuError::shape(
            OP,
            format!("x {:?} and w {:?} disagree on K", x.shape(), w.shape()),
        ));
    }
    expect_len(OP, "y", y.numel(), m * n)?;
    if y.cols() != n && m > 0 {
        return Err(GpuError::shape(
            OP,
            format!("y {:?} is not [M, {n}]", y.shape()),
        ));
    }
    if let Some(b) = bias {
        expect_len(OP, "bias", b.numel(), n)?;
    }
    let xb = x.single(OP, "x")?;
    let yb = y.single(OP, "y")?;
    let bb = match bias {
        Some(b) => b.single(OP, "bias")?,
        // Never read (flag bit 1 is clear), but the binding must hold some buffer.
        None => xb,
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    u32_of(OP, "M*N", m * n)?;
    u32_of(OP, "M*K", m * k)?;
    let flags = u32::from(accumulate) | (u32::from(bias.is_some()) << 1);
    // vec4 reads along K (both kernels but the scalar one): K in whole vec4s and every x/W
    // binding a whole number of them.
    let vec4 = k >= 4
        && k % 4 == 0
        && xb.size() % 16 == 0
        && w.chunks.iter().all(|c| c.buf.size() % 16 == 0);
    let tile = t.mm_tile.filter(|_| vec4);
    let limits = gpu.limits();
    for chunk in &w.chunks {
        if chunk.rows == 0 {
            continue;
        }
        let tile = tile.map(|tl| {
            tl.fitted(
                m,
                chunk.rows,
                t.mm_min_groups,
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_storage_size,
            )
        });
        let (key, rows_per_group, cols_per_group, threads) = kernel(&t, tile, vec4, m, chunk.rows);
        u32_of(OP, "W chunk", chunk.rows * k)?;
        let p = Params {
            m: m as u32,
            k: k as u32,
            n: n as u32,
            n0: chunk.row0 as u32,
            n_len: chunk.rows as u32,
            flags,
            _pad: [0; 2],
        };
        let blocks =
            m.div_ceil(rows_per_group as usize) * chunk.rows.div_ceil(cols_per_group as usize);
        gpu.launch(
            OP,
            &key,
            &[xb, &chunk.buf, bb, yb],
            bytemuck::bytes_of(&p),
            groups(blocks, threads),
        )?;
    }
    Ok(())
}

/// The kernel for one product (`m` rows, `n_len` columns of this W chunk): its key, the output
/// rows and columns one work unit covers, and the invocations per workgroup. Register
/// kernels: the unit is one invocation's block; tiled kernel: one workgroup's tile.
fn kernel(
    t: &Tuning,
    tile: Option<MatmulTile>,
    vec4: bool,
    m: usize,
    n_len: usize,
) -> (KernelKey, u32, u32, u32) {
    match tile {
        Some(tl) => {
            let threads = tl.threads();
            let subs = vec![
                ("BM", tl.bm),
                ("BN", tl.bn),
                ("BK", tl.bk),
                ("TM", tl.tm),
                ("TN", tl.tn),
                ("TM4", tl.tm / 4),
                ("TN4", tl.tn / 4),
                ("THREADS", threads),
                ("XS", tl.bk * tl.bm / 4),
                ("WS", tl.bk * tl.bn / 4),
                ("XLOADS", tl.bm * tl.bk / 4 / threads),
                ("WLOADS", tl.bn * tl.bk / 4 / threads),
            ];
            let key = KernelKey {
                shader: Shader::MatmulTiled,
                entry: "linear_tiled",
                subs,
            };
            (key, tl.bm, tl.bn, 1)
        }
        None if vec4 => {
            // A block past the output is computed on clamped rows and thrown away: shrink it
            // to the product (a one-token step would otherwise do 32 rows of work).
            let fit = |b: u32, len: usize| b.min(len.next_power_of_two().min(64) as u32);
            let (tm, tn) = (fit(t.mm4_tm, m), fit(t.mm4_tn, n_len));
            let key = KernelKey {
                shader: Shader::MatmulVec4,
                entry: "linear",
                subs: vec![("WG", t.mm_wg), ("TM", tm), ("TN", tn)],
            };
            (key, tm, tn, t.mm_wg)
        }
        None => {
            let key = KernelKey {
                shader: Shader::Matmul,
                entry: "linear",
                subs: vec![("WG", t.mm_wg), ("TM", t.mm_tm), ("TN", t.mm_tn)],
            };
            (key, t.mm_tm, t.mm_tn, t.mm_wg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::matmul::linear as cpu_linear;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;

    /// `w_chunk`: bytes per chunk of W only (the other operands stay whole).
    #[allow(clippy::too_many_arguments)]
    fn trial(
        gpu: &Gpu,
        rng: &mut Rng,
        m: usize,
        k: usize,
        n: usize,
        bias: bool,
        acc: bool,
        w_chunk: Option<u64>,
    ) {
        trial_with(gpu, rng, (m, k, n), bias, acc, w_chunk, gpu.tuning());
    }

    /// [`trial`] under a chosen tuning.
    fn trial_with(
        gpu: &Gpu,
        rng: &mut Rng,
        (m, k, n): (usize, usize, usize),
        bias: bool,
        acc: bool,
        w_chunk: Option<u64>,
        t: Tuning,
    ) {
        let x = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 1.0);
        let b = rng.vec(n, 1.0);
        let y0 = rng.vec(m * n, 1.0);
        let mut want = y0.clone();
        cpu_linear(&x, &w, bias.then_some(&b[..]), &mut want, m, k, n, acc);
        let gx = GpuTensor::upload(gpu, &[m, k], &x).unwrap();
        if let Some(b) = w_chunk {
            gpu.set_chunk_bytes(b);
        }
        let gw = GpuTensor::upload(gpu, &[n, k], &w).unwrap();
        gpu.set_chunk_bytes(gpu.max_chunk_bytes());
        let gb = GpuTensor::upload(gpu, &[n], &b).unwrap();
        let gy = GpuTensor::upload(gpu, &[m, n], &y0).unwrap();
        linear_with(gpu, &gx, &gw, bias.then_some(&gb), &gy, acc, t).unwrap();
        let got = gy.download(gpu).unwrap();
        tol::MATMUL
            .check(
                &format!(
                    "linear {m}x{k}x{n} bias {bias} acc {acc} chunks {} tuning {t:?}",
                    gw.chunk_count()
                ),
                &got,
                &want,
            )
            .unwrap();
        if let Some(b) = w_chunk {
            assert!(
                gw.chunk_count() as u64 >= (n * k * 4) as u64 / b,
                "W was not chunked"
            );
        }
    }

    #[test]
    fn matches_cpu_on_odd_prime_and_llm_shapes() {
        with_gpu("matmul", |gpu| {
            let mut rng = Rng::new(11);
            for &(m, k, n, bias, acc) in &[
                (1, 1, 1, false, false),
                (1, 77, 211, true, false),
                (3, 48, 130, false, true),
                (7, 13, 5, true, true),
                (37, 129, 67, true, false),
                (61, 97, 131, false, false),
                (64, 576, 192, false, true),
                (5, 0, 9, true, true),
            ] {
                trial(gpu, &mut rng, m, k, n, bias, acc, None);
            }
        });
    }

    #[test]
    fn chunked_weight_fills_every_column_range() {
        with_gpu("matmul chunked", |gpu| {
            let mut rng = Rng::new(12);
            // 53 rows of 37 floats in chunks of 10 rows: six chunks, the last partial.
            let chunk = Some(10 * 37 * 4);
            trial(gpu, &mut rng, 9, 37, 53, true, false, chunk);
            trial(gpu, &mut rng, 4, 37, 53, false, true, chunk);
        });
    }

    /// The tiled kernel, forced on whatever adapter runs the tests, at several tile shapes:
    /// M and N off the tile, K off the K step (and K % 4 != 0, which falls back), K = 4,
    /// accumulate and bias, and a chunked W.
    #[test]
    fn tiled_kernel_matches_cpu_on_every_tile_shape() {
        with_gpu("matmul tiled", |gpu| {
            let mut rng = Rng::new(13);
            let limits = gpu.limits();
            let (threads, shared) = (
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_storage_size,
            );
            let tiled = |tile| Tuning {
                mm_tile: Some(tile),
                ..gpu.tuning()
            };
            let tiles = [
                (128, 128, 16, 8, 8),
                (128, 64, 16, 8, 4),
                (64, 64, 16, 4, 4),
                (64, 128, 16, 4, 8),
                (128, 64, 32, 8, 4),
                (32, 32, 8, 4, 4),
            ]
            .map(|(bm, bn, bk, tm, tn)| MatmulTile { bm, bn, bk, tm, tn });
            for tile in tiles {
                assert!(tile.is_valid(threads, shared), "{tile:?}");
                for &(m, k, n, bias, acc) in &[
                    (1, 4, 1, false, false),
                    (3, 52, 130, true, true),
                    (37, 132, 67, true, false),
                    (129, 576, 131, false, true),
                    (61, 97, 131, false, false),
                    (200, 20, 257, true, false),
                ] {
                    trial_with(gpu, &mut rng, (m, k, n), bias, acc, None, tiled(tile));
                }
                let chunk = Some(10 * 36 * 4);
                trial_with(gpu, &mut rng, (9, 36, 53), true, true, chunk, tiled(tile));
            }
            // Every tile sums each output's products in the same order: the same bits.
            let (m, k, n) = (67, 100, 131);
            let x = rng.vec(m * k, 1.0);
            let w = rng.vec(n * k, 1.0);
            let gx = GpuTensor::upload(gpu, &[m, k], &x).unwrap();
            let gw = GpuTensor::upload(gpu, &[n, k], &w).unwrap();
            let outs: Vec<Vec<u32>> = tiles
                .iter()
                .map(|&tile| {
                    let gy = GpuTensor::zeros(gpu, &[m, n]).unwrap();
                    linear_with(gpu, &gx, &gw, None, &gy, false, tiled(tile)).unwrap();
                    gy.download(gpu)
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                })
                .collect();
            for (o, t) in outs.iter().zip(&tiles).skip(1) {
                assert!(
                    o == &outs[0],
                    "tile {t:?} differs from {:?} in bits",
                    tiles[0]
                );
            }
            // Shapes the shader cannot be built from: a 3-row block, 4096 invocations,
            // staging that does not divide among the invocations.
            for (shape, threads) in [
                ("64,64,16,3,4", 1024),
                ("256,256,64,4,4", 256),
                ("64,64,4,4,4", 256),
            ] {
                let tile = MatmulTile::parse(shape).unwrap();
                assert!(!tile.is_valid(threads, 1 << 15), "{shape}");
            }
            assert_eq!(
                MatmulTile::parse(" 128,64,16 ,8,4"),
                Some(MatmulTile {
                    bm: 128,
                    bn: 64,
                    bk: 16,
                    tm: 8,
                    tn: 4
                })
            );
            assert_eq!(MatmulTile::parse("128,64,16,8"), None);
        });
    }

    /// The register kernels, whichever the adapter's tuning picks, at several blocks and
    /// workgroup sizes: the vec4 one (K % 4 == 0) with blocks larger than the product, M and N
    /// off the block, K = 4, accumulate and bias, a chunked W; the scalar one where K % 4 != 0.
    #[test]
    fn register_kernels_match_cpu_at_every_block() {
        with_gpu("matmul register", |gpu| {
            let mut rng = Rng::new(14);
            for (wg, tm, tn) in [(8, 32, 32), (8, 16, 16), (64, 4, 4), (1, 3, 5), (16, 8, 24)] {
                let t = Tuning {
                    mm_tile: None,
                    mm_wg: wg,
                    mm_tm: tm.min(16),
                    mm_tn: tn.min(16),
                    mm4_tm: tm,
                    mm4_tn: tn,
                    ..gpu.tuning()
                };
                for &(m, k, n, bias, acc) in &[
                    (1, 4, 1, false, false),
                    (3, 52, 130, true, true),
                    (37, 132, 67, true, false),
                    (129, 576, 131, false, true),
                    (33, 97, 41, true, true),
                ] {
                    trial_with(gpu, &mut rng, (m, k, n), bias, acc, None, t);
                }
                let chunk = Some(10 * 36 * 4);
                trial_with(gpu, &mut rng, (9, 36, 53), true, true, chunk, t);
            }
            // Every block sums each output's products in the same order: the same bits.
            let (m, k, n) = (45, 100, 77);
            let x = rng.vec(m * k, 1.0);
            let w = rng.vec(n * k, 1.0);
            let gx = GpuTensor::upload(gpu, &[m, k], &x).unwrap();
            let gw = GpuTensor::upload(gpu, &[n, k], &w).unwrap();
            let bits = |tm, tn| -> Vec<u32> {
                let t = Tuning {
                    mm_tile: None,
                    mm4_tm: tm,
                    mm4_tn: tn,
                    ..gpu.tuning()
                };
                let gy = GpuTensor::zeros(gpu, &[m, n]).unwrap();
                linear_with(gpu, &gx, &gw, None, &gy, false, t).unwrap();
                gy.download(gpu)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            let first = bits(32, 32);
            for (tm, tn) in [(1, 1), (4, 4), (16, 8), (3, 7)] {
                assert!(
                    bits(tm, tn) == first,
                    "block {tm}x{tn} differs from 32x32 in bits"
                );
            }
        });
    }

    /// The hardware default steps down 128x128 -> 128x64 -> 64x64 as outputs get small.
    #[test]
    fn small_products_get_smaller_tiles() {
        let big = MatmulTile {
            bm: 128,
            bn: 128,
            bk: 16,
            tm: 8,
            tn: 8,
        };
        let fit = |m, n| big.fitted(m, n, 128, 1024, 49152);
        let half = MatmulTile {
            bn: 64,
            tn: 4,
            ..big
        };
        let quarter = MatmulTile {
            bm: 64,
            tm: 4,
            ..half
        };
        assert_eq!(fit(4096, 4096), big);
        assert_eq!(fit(1024, 1024), half);
        assert_eq!(fit(512, 576), quarter);
        assert_eq!(fit(1, 1), quarter);
        assert_eq!(big.fitted(1, 1, 0, 1024, 49152), big);
        for t in [big, half, quarter] {
            assert_eq!(t.threads(), 256);
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        with_gpu("matmul shapes", |gpu| {
            let x = GpuTensor::zeros(gpu, &[2, 3]).unwrap();
            let w = GpuTensor::zeros(gpu, &[4, 5]).unwrap();
            let y = GpuTensor::zeros(gpu, &[2, 4]).unwrap();
            let e = linear(gpu, &x, &w, None, &y, false).unwrap_err();
            assert!(e.to_string().contains("disagree on K"), "{e}");
            let w = GpuTensor::zeros(gpu, &[4, 3]).unwrap();
            let y = GpuTensor::zeros(gpu, &[2, 5]).unwrap();
            assert!(linear(gpu, &x, &w, None, &y, false).is_err());
        });
    }
}
