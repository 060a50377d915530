//! Quantisation onto the group grid and back, as the CPU oracle
//! `interventions::compress::rtn` (round-to-nearest per group, GPTQ or AWQ grid) and
//! `QuantizedWeight::params(..).dequant`. Bound: **bit-identical** to the CPU (indices,
//! scales, zero points and dequantised values), given IEEE min/max/add/mul (which Vulkan
//! requires) and the shader's integer division (`div_rn` in `shaders/quant.wgsl`).

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};
use crate::interventions::compress::quant::{Grid, QuantSpec};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    gw: u32,
    ng: u32,
    grid: u32,
    maxq: f32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 32);

const OP: &str = "quantize";

/// A weight quantised on the device.
pub struct GpuQuantized {
    /// Dequantised weight, `[rows, cols]`.
    pub weight: GpuTensor,
    /// Grid index of every weight as an f32 holding an integer in `0..=maxq`, `[rows, cols]`.
    pub q: GpuTensor,
    /// `[rows, n_groups]`.
    pub scales: GpuTensor,
    /// `[rows, n_groups]`.
    pub zeros: GpuTensor,
}

fn params(op: &'static str, w: &GpuTensor, spec: QuantSpec) -> GpuResult<Params> {
    spec.validate()
        .map_err(|e| GpuError::shape(op, e.to_string()))?;
    if w.shape().len() != 2 {
        return Err(GpuError::shape(
            op,
            format!("expected a 2-D [out, in] weight, got {:?}", w.shape()),
        ));
    }
    let (rows, cols) = (w.rows(), w.cols());
    u32_of(op, "weight", w.numel())?;
    Ok(Params {
        rows: rows as u32,
        cols: cols as u32,
        gw: spec.group_width(cols).max(1) as u32,
        ng: spec.n_groups(cols) as u32,
        grid: match spec.grid {
            Grid::GptqAsym => 0,
            Grid::GptqSym => 1,
            Grid::Awq => 2,
        },
        maxq: spec.maxq(),
        _pad: [0; 2],
    })
}

fn key(gpu: &Gpu, entry: &'static str) -> (KernelKey, u32) {
    let wg = gpu.tuning().wg;
    let k = KernelKey {
        shader: Shader::Quant,
        entry,
        subs: vec![("WG", wg)],
    };
    (k, wg)
}

/// Round-to-nearest quantisation of `w` (`[out, in]`) per group of `spec`.
pub fn quantize(gpu: &Gpu, w: &GpuTensor, spec: QuantSpec) -> GpuResult<GpuQuantized> {
    let p = params(OP, w, spec)?;
    let (rows, cols, ng) = (w.rows(), w.cols(), p.ng as usize);
    let out = GpuQuantized {
        weight: GpuTensor::zeros(gpu, &[rows, cols])?,
        q: GpuTensor::zeros(gpu, &[rows, cols])?,
        scales: GpuTensor::zeros(gpu, &[rows, ng])?,
        zeros: GpuTensor::zeros(gpu, &[rows, ng])?,
    };
    if cols == 0 {
        return Ok(out);
    }
    let (k, wg) = key(gpu, "quantize_groups");
    gpu.launch(
        OP,
        &k,
        &[
            w.single(OP, "w")?,
            out.weight.single(OP, "out")?,
            out.q.single(OP, "q")?,
            out.scales.single(OP, "scales")?,
            out.zeros.single(OP, "zeros")?,
        ],
        bytemuck::bytes_of(&p),
        groups(rows * ng, wg),
    )?;
    Ok(out)
}

/// `out = scale * (q - zero)` with each column's group parameters: the inverse of the grid
/// mapping, for indices `q` (`[rows, cols]`) and `scales`/`zeros` (`[rows, n_groups]`).
pub fn dequantize(
    gpu: &Gpu,
    q: &GpuTensor,
    scales: &GpuTensor,
    zeros: &GpuTensor,
    spec: QuantSpec,
    out: &GpuTensor,
) -> GpuResult<()> {
    const OP: &str = "dequantize";
    let p = params(OP, q, spec)?;
    let (rows, cols) = (q.rows(), q.cols());
    expect_len(OP, "scales", scales.numel(), rows * p.ng as usize)?;
    expect_len(OP, "zeros", zeros.numel(), rows * p.ng as usize)?;
    expect_len(OP, "out", out.numel(), rows * cols)?;
    let (k, wg) = key(gpu, "dequantize");
    gpu.launch_bound(
        OP,
        &k,
        &[
            (1, out.single(OP, "out")?),
            (2, q.single(OP, "q")?),
            (3, scales.single(OP, "scales")?),
            (4, zeros.single(OP, "zeros")?),
        ],
        5,
        bytemuck::bytes_of(&p),
        groups(rows * cols, wg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::interventions::compress::rtn::rtn;
    use crate::interventions::compress::TestRng;

    /// `div_rn` against the CPU's IEEE division, bit for bit: random finite operands over the
    /// whole exponent range, quotients that overflow or land in the subnormals (ties there
    /// included), subnormal operands and signed zeros.
    #[test]
    fn shader_division_is_correctly_rounded() {
        with_gpu("div_rn", |gpu| {
            let mut rng = TestRng::new(182);
            let mut bits = || rng.next_u64() as u32;
            let mut pairs: Vec<(f32, f32)> = Vec::new();
            for _ in 0..4000 {
                // Random significands and signs; exponents anywhere from subnormal to huge.
                let (a, b, ea, eb) = (bits(), bits(), bits() % 254, bits() % 254);
                let a = f32::from_bits((a & 0x807F_FFFF) | (ea << 23));
                let b = f32::from_bits((b & 0x807F_FFFF) | (eb << 23));
                if b != 0.0 {
                    pairs.push((a, b));
                }
            }
            for _ in 0..2000 {
                // Ranges over small grid sizes: the division quantisation does.
                let a = f32::from_bits(bits() & 0x3FFF_FFFF);
                pairs.push((a, (1 + bits() % 255) as f32));
            }
            let tiny = f32::from_bits(1);
            pairs.extend([
                (3.0 * tiny, 2.0), // 1.5 ulp of the subnormals: a tie, to even (2)
                (5.0 * tiny, 2.0), // 2.5 -> 2
                (7.0 * tiny, 2.0), // 3.5 -> 4
                (f32::MIN_POSITIVE, 3.0),
                (f32::MIN_POSITIVE, 1.0 + f32::EPSILON),
                (tiny, 0.5),
                (tiny, 3.0),
                (f32::MAX, 0.5),
                (f32::MAX, 1.0 - f32::EPSILON / 2.0),
                (-0.0, 3.0),
                (0.0, -3.0),
                (1.0, 3.0),
                (-2.0, 7.0),
                (0.470_433_2 * 7.0, 7.0),
                (6.0 * tiny, 1.5 * f32::MIN_POSITIVE),
            ]);
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.iter().copied().unzip();
            let n = a.len();
            let ga = GpuTensor::upload(gpu, &[n], &a).unwrap();
            let gb = GpuTensor::upload(gpu, &[n], &b).unwrap();
            let gq = GpuTensor::zeros(gpu, &[n]).unwrap();
            let p = Params {
                rows: n as u32,
                cols: 1,
                gw: 1,
                ng: 1,
                grid: 0,
                maxq: 1.0,
                _pad: [0; 2],
            };
            let (k, wg) = key(gpu, "divide_rn");
            gpu.launch_bound(
                "divide_rn",
                &k,
                &[
                    (0, ga.single("t", "a").unwrap()),
                    (1, gq.single("t", "q").unwrap()),
                    (2, gb.single("t", "b").unwrap()),
                ],
                5,
                bytemuck::bytes_of(&p),
                groups(n, wg),
            )
            .unwrap();
            let got = gq.download(gpu).unwrap();
            let wrong: Vec<String> = (0..n)
                .filter(|&i| got[i].to_bits() != (a[i] / b[i]).to_bits())
                .map(|i| {
                    format!(
                        "{:e} / {:e}: {:e} not {:e}",
                        a[i],
                        b[i],
                        got[i],
                        a[i] / b[i]
                    )
                })
                .collect();
            assert!(
                wrong.is_empty(),
                "{} of {n} quotients differ: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(8)]
            );
        });
    }

    #[test]
    fn matches_the_cpu_oracle_bit_for_bit_on_every_grid() {
        with_gpu("quantize", |gpu| {
            let mut rng = TestRng::new(181);
            for &(rows, cols, bits, group) in &[
                (1, 1, 4, 128),
                (7, 80, 3, 32),
                (13, 577, 4, 128),
                (64, 576, 4, 64),
                (5, 131, 2, -1),
                (9, 250, 8, 7),
            ] {
                let mut w = rng.matrix(rows, cols);
                // A group of equal values, an all-zero group and exact grid ties (x / scale
                // landing on .5) on the first row.
                if cols >= 16 {
                    let d = w.data_mut();
                    d[..4].fill(0.75);
                    d[4..8].fill(0.0);
                    for (i, v) in d[8..16].iter_mut().enumerate() {
                        *v = (i as f32 - 3.5) * 0.125;
                    }
                }
                for grid in [Grid::GptqAsym, Grid::GptqSym, Grid::Awq] {
                    let spec = QuantSpec::new(bits, group, grid).unwrap();
                    let want = rtn("w", &w, spec).unwrap();
                    let gw = GpuTensor::from_tensor(gpu, &w).unwrap();
                    let got = quantize(gpu, &gw, spec).unwrap();
                    let what = format!("{rows}x{cols} {bits}-bit g{group} {grid:?}");
                    let q: Vec<u8> = got
                        .q
                        .download(gpu)
                        .unwrap()
                        .iter()
                        .map(|&v| v as u8)
                        .collect();
                    assert_eq!(q, want.q, "{what}: indices");
                    assert_eq!(
                        got.scales.download(gpu).unwrap(),
                        want.scales,
                        "{what}: scales"
                    );
                    assert_eq!(
                        got.zeros.download(gpu).unwrap(),
                        want.zeros,
                        "{what}: zeros"
                    );
                    assert_eq!(
                        got.weight.download(gpu).unwrap(),
                        want.weight.data(),
                        "{what}: dequantised"
                    );
                    // Dequantising the indices gives the same values, as the CPU's `dequant`.
                    let back = GpuTensor::zeros(gpu, &[rows, cols]).unwrap();
                    dequantize(gpu, &got.q, &got.scales, &got.zeros, spec, &back).unwrap();
                    let cpu_back: Vec<f32> = (0..rows * cols)
                        .map(|i| {
                            want.params(i / cols, i % cols, spec.maxq())
                                .dequant(want.q[i])
                        })
                        .collect();
                    assert_eq!(back.download(gpu).unwrap(), cpu_back, "{what}: dequantize");
                }
            }
        });
    }

    #[test]
    fn rejects_bad_specs_and_shapes() {
        with_gpu("quantize shapes", |gpu| {
            let w = GpuTensor::zeros(gpu, &[2, 3, 4]).unwrap();
            let spec = QuantSpec {
                bits: 4,
                group: 8,
                grid: Grid::Awq,
            };
            assert!(quantize(gpu, &w, spec).is_err());
            let w = GpuTensor::zeros(gpu, &[2, 4]).unwrap();
            let bad = QuantSpec { bits: 9, ..spec };
            assert!(quantize(gpu, &w, bad).is_err());
        });
    }
}
