//! Cross-entropy on chosen rows of logits, with its gradient to the logits, as the CPU
//! `train::loss::cross_entropy` (`log_softmax` then `cross_entropy_row`): each row carries
//! its own `(token, weight)` targets (a negative weight is gradient ascent). The gradient is
//! added to `dlogits`; the loss comes back to the host (one value per row, summed in f64).

use bytemuck::{Pod, Zeroable};

use super::{expect_len, u32_of};
use crate::backend::gpu::buffer::upload_u32;
use crate::backend::gpu::pipeline::{KernelKey, Shader};
use crate::backend::gpu::{Gpu, GpuError, GpuResult, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    v: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 16);

const OP: &str = "cross_entropy";

/// `sum_rows sum_t w_t * -log softmax(logits[row])[token_t]`, adding its gradient to
/// `dlogits`. `logits` and `dlogits` are `[R, V]`, `targets` has one list per row.
pub fn cross_entropy(
    gpu: &Gpu,
    logits: &GpuTensor,
    targets: &[Vec<(u32, f32)>],
    dlogits: &GpuTensor,
) -> GpuResult<f64> {
    let (rows, v) = (logits.rows(), logits.cols());
    if targets.len() != rows {
        return Err(GpuError::shape(
            OP,
            format!("{} target lists for {rows} rows of logits", targets.len()),
        ));
    }
    expect_len(OP, "dlogits", dlogits.numel(), logits.numel())?;
    if std::ptr::eq(logits, dlogits) {
        return Err(GpuError::shape(OP, "dlogits must not be the logits tensor"));
    }
    u32_of(OP, "logits", logits.numel())?;
    if rows == 0 {
        return Ok(0.0);
    }
    if v == 0 {
        return Err(GpuError::shape(OP, "logits have no vocabulary columns"));
    }
    let (mut offs, mut toks, mut wts) = (vec![0u32], Vec::new(), Vec::new());
    for (r, list) in targets.iter().enumerate() {
        for &(t, w) in list {
            if t as usize >= v {
                return Err(GpuError::shape(
                    OP,
                    format!("row {r}: target token {t} is outside the vocabulary of {v}"),
                ));
            }
            toks.push(t);
            wts.push(w);
        }
        offs.push(u32_of(OP, "targets", toks.len())?);
    }
    let n_t = wts.len();
    // A bindable (non-empty) weight buffer even with no targets at all.
    wts.resize(n_t.max(1), 0.0);
    let wt = GpuTensor::upload(gpu, &[wts.len()], &wts)?;
    let loss = GpuTensor::zeros(gpu, &[rows])?;
    let p = Params {
        rows: rows as u32,
        v: v as u32,
        _pad: [0; 2],
    };
    // The tree reductions halve the workgroup, so its size must be a power of two.
    let wg = gpu.tuning().wg.next_power_of_two().min(256);
    let key = KernelKey {
        shader: Shader::CrossEntropy,
        entry: "cross_entropy",
        subs: vec![("WG", wg)],
    };
    gpu.launch(
        OP,
        &key,
        &[
            logits.single(OP, "logits")?,
            &upload_u32(gpu, OP, &offs)?,
            &upload_u32(gpu, OP, &toks)?,
            wt.single(OP, "weights")?,
            dlogits.single(OP, "dlogits")?,
            loss.single(OP, "loss")?,
        ],
        bytemuck::bytes_of(&p),
        rows as u64,
    )?;
    Ok(loss.download(gpu)?.iter().map(|&l| f64::from(l)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::Rng;
    use crate::backend::gpu::ops::tol;
    use crate::backend::gpu::testutil::with_gpu;
    use crate::train::loss::cross_entropy::{cross_entropy_row, log_softmax};

    #[test]
    fn matches_cpu_loss_and_gradient_for_descent_and_ascent() {
        with_gpu("cross entropy", |gpu| {
            let mut rng = Rng::new(161);
            for &(rows, v, scale) in &[(1, 1, 1.0), (3, 13, 4.0), (7, 1031, 8.0), (5, 4099, 20.0)] {
                let logits = rng.vec(rows * v, scale);
                let targets: Vec<Vec<(u32, f32)>> = (0..rows)
                    .map(|r| match r % 4 {
                        0 => vec![((r * 7 % v) as u32, 0.5)],
                        // A bag of tokens with a repeat.
                        1 => vec![(0, 0.25), ((v - 1) as u32, 0.5), (0, 0.125)],
                        // Gradient ascent.
                        2 => vec![((v / 2) as u32, -1.0)],
                        // A row whose logits are read by no target.
                        _ => vec![],
                    })
                    .collect();
                let d0 = rng.vec(rows * v, 1.0);
                let mut want = d0.clone();
                let mut want_loss = 0.0;
                let mut logp = vec![0.0; v];
                for (r, t) in targets.iter().enumerate() {
                    log_softmax(&logits[r * v..(r + 1) * v], &mut logp);
                    want_loss += cross_entropy_row(&logp, t, &mut want[r * v..(r + 1) * v]);
                }
                let gl = GpuTensor::upload(gpu, &[rows, v], &logits).unwrap();
                let gd = GpuTensor::upload(gpu, &[rows, v], &d0).unwrap();
                let loss = cross_entropy(gpu, &gl, &targets, &gd).unwrap();
                let what = format!("cross entropy {rows}x{v} scale {scale}");
                tol::EXP
                    .check(
                        &format!("{what} dlogits"),
                        &gd.download(gpu).unwrap(),
                        &want,
                    )
                    .unwrap();
                tol::EXP
                    .check(&format!("{what} loss"), &[loss as f32], &[want_loss as f32])
                    .unwrap();
            }
        });
    }

    #[test]
    fn rejects_bad_targets() {
        with_gpu("cross entropy shapes", |gpu| {
            let l = GpuTensor::zeros(gpu, &[2, 5]).unwrap();
            let d = GpuTensor::zeros(gpu, &[2, 5]).unwrap();
            let e = cross_entropy(gpu, &l, &[vec![(5, 1.0)], vec![]], &d).unwrap_err();
            assert!(e.to_string().contains("token 5"), "{e}");
            assert!(cross_entropy(gpu, &l, &[vec![]], &d).is_err());
            assert!(cross_entropy(gpu, &l, &[vec![], vec![]], &l).is_err());
        });
    }
}
