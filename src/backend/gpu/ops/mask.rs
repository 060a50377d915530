//! Pruning-mask application, as the CPU pruners (`interventions::compress::{mask, magnitude,
//! wanda}`): from a score per weight, the N:M rule (N smallest of every M columns), the
//! per-row K smallest (Wanda's unstructured comparison group) or one inclusive threshold for
//! the layer (magnitude, SparseGPT), giving the pruned weight and its mask. Scores compare in
//! IEEE total order with ties to the lower column, as the CPU's stable sorts; the result is
//! bit-identical to the CPU's.

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::pipeline::{groups, KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    n: u32,
    m: u32,
    mode: u32,
    thresh: f32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 32);

const OP: &str = "mask";

/// Where each weight's score comes from.
#[derive(Clone, Copy)]
pub enum Scores<'a> {
    /// `[rows, cols]`, one per weight.
    Given(&'a GpuTensor),
    /// `|w|` (magnitude pruning).
    Magnitude,
    /// `|w| * norms[col]` (Wanda; `norms` is `[cols]`, `sqrt(scaler_row)`).
    Wanda(&'a GpuTensor),
}

/// Which weights to prune.
#[derive(Clone, Copy, Debug)]
pub enum MaskRule {
    /// In each row, the `n` smallest of every run of `m` columns (`cols % m == 0`, `n < m`).
    NM { n: usize, m: usize },
    /// In each row, the `k` smallest (`k <= cols`).
    RowSmallest(usize),
    /// Every score `<= t`.
    Threshold(f32),
}

/// A pruned weight and its mask (1.0 where pruned), both `[rows, cols]`.
pub struct GpuPruned {
    pub weight: GpuTensor,
    pub mask: GpuTensor,
}

pub fn apply_mask(
    gpu: &Gpu,
    w: &GpuTensor,
    scores: Scores,
    rule: MaskRule,
) -> GpuResult<GpuPruned> {
    let (rows, cols) = (w.rows(), w.cols());
    if w.shape().len() != 2 {
        return Err(GpuError::shape(
            OP,
            format!("expected a 2-D [out, in] weight, got {:?}", w.shape()),
        ));
    }
    u32_of(OP, "w", w.numel())?;
    let (mode, sbuf) = match scores {
        Scores::Given(s) => {
            expect_len(OP, "scores", s.numel(), w.numel())?;
            (0, s.single(OP, "scores")?)
        }
        // The weights stand in for the unread scores binding.
        Scores::Magnitude => (1, w.single(OP, "w")?),
        Scores::Wanda(norms) => {
            expect_len(OP, "norms", norms.numel(), cols)?;
            (2, norms.single(OP, "norms")?)
        }
    };
    let mut p = Params {
        rows: rows as u32,
        cols: cols as u32,
        n: 0,
        m: 1,
        mode,
        thresh: 0.0,
        _pad: [0; 2],
    };
    let out = GpuPruned {
        weight: GpuTensor::zeros(gpu, &[rows, cols])?,
        mask: GpuTensor::zeros(gpu, &[rows, cols])?,
    };
    let wg = gpu.tuning().wg.next_power_of_two().min(256);
    let (entry, workgroups) = match rule {
        MaskRule::NM { n, m } => {
            if n == 0 || n >= m || cols % m != 0 {
                return Err(GpuError::shape(
                    OP,
                    format!("N:M {n}:{m} needs 0 < N < M and M dividing the {cols} columns"),
                ));
            }
            (p.n, p.m) = (n as u32, m as u32);
            ("nm_mask", groups(rows * (cols / m), wg))
        }
        MaskRule::RowSmallest(k) => {
            if k > cols {
                return Err(GpuError::shape(
                    OP,
                    format!("cannot prune {k} of {cols} columns per row"),
                ));
            }
            // k = 0 needs no special case: the select then finds the smallest possible
            // key with no ties left to take, and prunes nothing.
            p.n = k as u32;
            ("row_smallest", rows as u64)
        }
        MaskRule::Threshold(t) => {
            p.thresh = t;
            ("threshold_mask", groups(rows * cols, wg))
        }
    };
    let key = KernelKey {
        shader: Shader::Mask,
        entry,
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[
            sbuf,
            w.single(OP, "w")?,
            out.weight.single(OP, "w_out")?,
            out.mask.single(OP, "mask")?,
        ],
        bytemuck::bytes_of(&p),
        workgroups,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::backend::Tensor;
    use crate::interventions::compress::magnitude::prune_magnitude;
    use crate::interventions::compress::mask::{inclusive_threshold, PruneOutput, SparsityPattern};
    use crate::interventions::compress::wanda::prune_wanda;
    use crate::interventions::compress::TestRng;

    fn check(gpu: &Gpu, what: &str, got: &GpuPruned, want: &PruneOutput) {
        let mask: Vec<bool> = got
            .mask
            .download(gpu)
            .unwrap()
            .iter()
            .map(|&v| v != 0.0)
            .collect();
        assert_eq!(mask, want.mask, "{what}: mask");
        assert_eq!(
            got.weight.download(gpu).unwrap(),
            want.weight.data(),
            "{what}: pruned weight"
        );
    }

    /// A random matrix with ties: repeated magnitudes of both signs and exact zeros.
    fn weights(rng: &mut TestRng, rows: usize, cols: usize) -> Tensor {
        let mut w = rng.matrix(rows, cols);
        for (i, v) in w.data_mut().iter_mut().enumerate() {
            match i % 11 {
                3 => *v = 0.5,
                7 => *v = -0.5,
                9 => *v = 0.0,
                _ => {}
            }
        }
        w
    }

    #[test]
    fn magnitude_matches_cpu_for_threshold_and_nm() {
        with_gpu("mask magnitude", |gpu| {
            let mut rng = TestRng::new(191);
            for &(rows, cols) in &[(1, 4), (7, 48), (33, 576)] {
                let w = weights(&mut rng, rows, cols);
                let gw = GpuTensor::from_tensor(gpu, &w).unwrap();
                for s in [0.0, 0.3, 0.5, 0.9] {
                    let want = prune_magnitude("w", &w, SparsityPattern::Unstructured(s)).unwrap();
                    let scores: Vec<f32> = w.data().iter().map(|v| v.abs()).collect();
                    let t = inclusive_threshold(&scores, s);
                    let got =
                        apply_mask(gpu, &gw, Scores::Magnitude, MaskRule::Threshold(t)).unwrap();
                    check(gpu, &format!("magnitude {rows}x{cols} s {s}"), &got, &want);
                }
                for (n, m) in [(2, 4), (1, 4), (4, 8)] {
                    if cols % m != 0 {
                        continue;
                    }
                    let want = prune_magnitude("w", &w, SparsityPattern::NM { n, m }).unwrap();
                    let got =
                        apply_mask(gpu, &gw, Scores::Magnitude, MaskRule::NM { n, m }).unwrap();
                    check(
                        gpu,
                        &format!("magnitude {rows}x{cols} {n}:{m}"),
                        &got,
                        &want,
                    );
                }
            }
        });
    }

    #[test]
    fn wanda_matches_cpu_per_row_and_nm() {
        with_gpu("mask wanda", |gpu| {
            let mut rng = TestRng::new(192);
            for &(rows, cols) in &[(1, 8), (9, 40), (17, 1032)] {
                let w = weights(&mut rng, rows, cols);
                // Norms with repeats, so that equal scores occur across columns too.
                let scaler: Vec<f32> = (0..cols).map(|j| ((j % 5) as f32 + 0.5) * 0.3).collect();
                let norms: Vec<f32> = scaler.iter().map(|v| v.sqrt()).collect();
                let gw = GpuTensor::from_tensor(gpu, &w).unwrap();
                let gn = GpuTensor::upload(gpu, &[cols], &norms).unwrap();
                for s in [0.0, 0.25, 0.5, 0.99] {
                    let want =
                        prune_wanda("w", &w, &scaler, SparsityPattern::Unstructured(s)).unwrap();
                    let k = (cols as f64 * s) as usize;
                    let got =
                        apply_mask(gpu, &gw, Scores::Wanda(&gn), MaskRule::RowSmallest(k)).unwrap();
                    check(gpu, &format!("wanda {rows}x{cols} s {s}"), &got, &want);
                }
                let want =
                    prune_wanda("w", &w, &scaler, SparsityPattern::NM { n: 2, m: 4 }).unwrap();
                let got =
                    apply_mask(gpu, &gw, Scores::Wanda(&gn), MaskRule::NM { n: 2, m: 4 }).unwrap();
                check(gpu, &format!("wanda {rows}x{cols} 2:4"), &got, &want);
            }
        });
    }

    #[test]
    fn given_scores_with_negatives_follow_total_order() {
        with_gpu("mask given scores", |gpu| {
            let (rows, cols) = (3, 12);
            let mut rng = TestRng::new(193);
            let w = rng.matrix(rows, cols);
            let mut sc = rng.matrix(rows, cols).into_data();
            sc[0] = -0.0;
            sc[1] = 0.0;
            sc[2] = -0.0;
            let gw = GpuTensor::from_tensor(gpu, &w).unwrap();
            let gs = GpuTensor::upload(gpu, &[rows, cols], &sc).unwrap();
            for k in [1, 5, 12] {
                let mut mask = vec![false; rows * cols];
                for (srow, mrow) in sc.chunks(cols).zip(mask.chunks_mut(cols)) {
                    crate::interventions::compress::mask::smallest_k_row(srow, k, mrow);
                }
                let got =
                    apply_mask(gpu, &gw, Scores::Given(&gs), MaskRule::RowSmallest(k)).unwrap();
                let gm: Vec<bool> = got
                    .mask
                    .download(gpu)
                    .unwrap()
                    .iter()
                    .map(|&v| v != 0.0)
                    .collect();
                assert_eq!(gm, mask, "k = {k}");
            }
            assert!(apply_mask(gpu, &gw, Scores::Given(&gs), MaskRule::RowSmallest(13)).is_err());
            assert!(apply_mask(gpu, &gw, Scores::Magnitude, MaskRule::NM { n: 2, m: 5 }).is_err());
        });
    }
}
