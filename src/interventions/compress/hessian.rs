//! The layer Hessian proxy `H = (2/N) Σ XᵀX` of GPTQ/SparseGPT (IST-DASLab/gptq `gptq.py`
//! `GPTQ.add_batch` and the preamble of `fasterquant`): accumulation over calibration batches,
//! dead input columns, damping, and the upper Cholesky factor of `H⁻¹` with a damping retry.
//!
//! Precision: each batch's `XᵀX` is formed in f32 with a GEMM (the reference's dtype; a batch
//! is one or a few sequences, so f32 sums stay short), and the running mean across batches is
//! kept in f64 so that hundreds of batches add no drift. Factorisations are f64 (`crate::linalg`).

use super::{check_finite, tensor_err};
use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::linalg;

/// Running `H` over calibration batches, `[n, n]` row-major f64.
#[derive(Clone, Debug)]
pub struct Hessian {
    n: usize,
    data: Vec<f64>,
    nsamples: usize,
}

impl Hessian {
    /// An empty accumulator for a layer with `n` input features.
    pub fn new(n: usize) -> Self {
        Hessian {
            n,
            data: vec![0.0; n * n],
            nsamples: 0,
        }
    }

    /// Wraps a precomputed `H` (e.g. from a file), checking its shape and values.
    pub fn from_data(name: &str, n: usize, data: Vec<f64>, nsamples: usize) -> Result<Self> {
        if data.len() != n * n || n == 0 {
            return Err(tensor_err(
                name,
                format!(
                    "Hessian must be {n}x{n} ({} values), got {}",
                    n * n,
                    data.len()
                ),
            ));
        }
        check_finite(name, &data)?;
        Ok(Hessian { n, data, nsamples })
    }

    /// GPTQ `add_batch`: `x` is `[tokens, n]` (one sequence) or `[batch, tokens, n]`.
    /// `H ← H·N/(N+b) + (2/(N+b))·XᵀX`, where `N` counts *sequences* seen so far and `b` is the
    /// batch's sequence count (algorithms.md section 13 item 6: a scale-only effect, kept exact).
    pub fn add_batch(&mut self, name: &str, x: &Tensor) -> Result<()> {
        let shape = x.shape();
        let b = match shape.len() {
            2 => 1,
            3 => shape[0],
            _ => {
                return Err(tensor_err(
                    name,
                    format!(
                    "calibration input must be [tokens, in] or [batch, tokens, in], got {shape:?}"
                ),
                ))
            }
        };
        if x.cols() != self.n {
            return Err(tensor_err(
                name,
                format!(
                    "calibration input has {} features, the layer has {} inputs",
                    x.cols(),
                    self.n
                ),
            ));
        }
        if b == 0 {
            return Ok(());
        }
        check_finite(name, x.data())?;
        let g = linalg::gram_f32(x.data(), x.rows(), self.n);
        let total = (self.nsamples + b) as f64;
        let keep = self.nsamples as f64 / total;
        let add = 2.0 / total;
        for (h, &gv) in self.data.iter_mut().zip(&g) {
            *h = *h * keep + add * gv as f64;
        }
        self.nsamples += b;
        Ok(())
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Sequences accumulated so far.
    pub fn nsamples(&self) -> usize {
        self.nsamples
    }

    pub fn data(&self) -> &[f64] {
        &self.data
    }

    pub fn diag(&self) -> Vec<f64> {
        (0..self.n).map(|i| self.data[i * self.n + i]).collect()
    }
}

/// Damping settings: `percdamp` of the mean diagonal is added to `H`'s diagonal; on a failed
/// Cholesky, `percdamp` is multiplied by 10 (0 becomes 0.01) and retried up to `max_retries`
/// times (GPTQModel's automatic retry, AutoGPTQ#708).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DampConfig {
    pub percdamp: f64,
    pub max_retries: u32,
}

impl Default for DampConfig {
    fn default() -> Self {
        DampConfig {
            percdamp: 0.01,
            max_retries: 4,
        }
    }
}

impl DampConfig {
    pub fn validate(&self) -> Result<()> {
        if !self.percdamp.is_finite() || self.percdamp < 0.0 {
            return Err(Error::usage(
                "--percdamp",
                format!("damping must be a finite value >= 0, got {}", self.percdamp),
            ));
        }
        Ok(())
    }
}

/// What the factorisation needed: recorded in the step's provenance.
#[derive(Clone, Debug, PartialEq)]
pub struct DampReport {
    pub percdamp_requested: f64,
    /// The `percdamp` of the attempt that succeeded.
    pub percdamp_used: f64,
    /// The absolute value added to the diagonal (`percdamp_used · mean(diag H)`).
    pub damp_added: f64,
    /// Failed attempts before the successful one.
    pub retries: u32,
    /// One line per failed attempt (percdamp and the failing pivot).
    pub failures: Vec<String>,
    /// Input columns with `H_jj == 0`, zeroed in `W` (original column order).
    pub dead_columns: Vec<usize>,
}

/// Dead inputs (`fasterquant`): where `H_jj == 0`, set `H_jj = 1` and zero column j of `w`
/// (`rows × n`). Returns the dead column indices.
pub fn mark_dead_columns(h: &mut [f64], n: usize, w: &mut [f32], rows: usize) -> Vec<usize> {
    let mut dead = Vec::new();
    for j in 0..n {
        if h[j * n + j] == 0.0 {
            h[j * n + j] = 1.0;
            for r in 0..rows {
                w[r * n + j] = 0.0;
            }
            dead.push(j);
        }
    }
    dead
}

/// Upper Cholesky factor `U` of `(H + damp·I)⁻¹` (`= UᵀU`), f64, with the damping retry.
/// `h` is the (dead-column-fixed, possibly permuted) Hessian of tensor `name`.
pub fn damped_inverse_cholesky(
    name: &str,
    h: &[f64],
    n: usize,
    cfg: &DampConfig,
) -> Result<(Vec<f64>, DampReport)> {
    cfg.validate()?;
    if h.len() != n * n {
        return Err(tensor_err(name, format!("Hessian is not {n}x{n}")));
    }
    check_finite(name, h)?;
    let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    let mut report = DampReport {
        percdamp_requested: cfg.percdamp,
        percdamp_used: cfg.percdamp,
        damp_added: 0.0,
        retries: 0,
        failures: Vec::new(),
        dead_columns: Vec::new(),
    };
    let mut pd = cfg.percdamp;
    let mut hd = h.to_vec();
    loop {
        let damp = pd * mean_diag;
        for i in 0..n {
            hd[i * n + i] = h[i * n + i] + damp;
        }
        match linalg::inverse_cholesky_upper(&hd, n) {
            Ok(u) if u.iter().all(|v| v.is_finite()) => {
                report.percdamp_used = pd;
                report.damp_added = damp;
                return Ok((u, report));
            }
            res => {
                let why = match res {
                    Err(e) => e.to_string(),
                    Ok(_) => "non-finite factor".to_string(),
                };
                report.failures.push(format!("percdamp {pd:e}: {why}"));
                if report.retries >= cfg.max_retries {
                    return Err(tensor_err(
                        name,
                        format!(
                            "Cholesky of the damped Hessian failed after {} retries ({}); \
                             hint: use more calibration data or a larger --percdamp",
                            report.retries,
                            report.failures.join("; ")
                        ),
                    ));
                }
                report.retries += 1;
                pd = if pd == 0.0 { 0.01 } else { pd * 10.0 };
            }
        }
    }
}

/// Stable descending order of `diag` (GPTQ act-order `argsort(diag(H), descending=True)`;
/// ties keep index order, which torch leaves unspecified).
pub fn act_order_perm(diag: &[f64]) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..diag.len()).collect();
    perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
    perm
}

/// `H[perm][:, perm]`.
pub fn permute_symmetric(h: &[f64], n: usize, perm: &[usize]) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for (i, &pi) in perm.iter().enumerate() {
        for (j, &pj) in perm.iter().enumerate() {
            out[i * n + j] = h[pi * n + pj];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interventions::compress::TestRng;

    #[test]
    fn add_batch_is_a_running_mean_over_sequences() {
        let mut rng = TestRng::new(3);
        let (t, n) = (6, 5);
        let xs: Vec<Tensor> = (0..3).map(|_| rng.matrix(t, n)).collect();
        let mut h = Hessian::new(n);
        h.add_batch("x", &xs[0]).unwrap();
        // Two sequences in one [2, t, n] batch.
        let mut both = xs[1].data().to_vec();
        both.extend_from_slice(xs[2].data());
        h.add_batch("x", &Tensor::new(vec![2, t, n], both).unwrap())
            .unwrap();
        assert_eq!(h.nsamples(), 3);
        for i in 0..n {
            for j in 0..n {
                let s: f64 = xs
                    .iter()
                    .flat_map(|x| (0..t).map(move |r| x.row(r)[i] as f64 * x.row(r)[j] as f64))
                    .sum();
                let want = 2.0 * s / 3.0;
                assert!((h.data()[i * n + j] - want).abs() < 1e-5, "{i},{j}");
            }
        }
        assert!(h.add_batch("x", &rng.matrix(t, n + 1)).is_err());
    }

    #[test]
    fn dead_columns_are_zeroed() {
        let n = 3;
        let mut h = vec![2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0];
        let mut w = vec![1.0f32; 2 * n];
        assert_eq!(mark_dead_columns(&mut h, n, &mut w, 2), vec![1]);
        assert_eq!(h[4], 1.0);
        assert_eq!(w, vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn singular_hessian_retry_is_reported() {
        // Rank-1 H (v vᵀ) with zero damping cannot be factored; the retry adds 1% damping.
        let n = 6;
        let v: Vec<f64> = (0..n).map(|i| i as f64 + 1.0).collect();
        let h: Vec<f64> = (0..n * n).map(|k| v[k / n] * v[k % n]).collect();
        let cfg = DampConfig {
            percdamp: 0.0,
            max_retries: 3,
        };
        let (u, rep) = damped_inverse_cholesky("h", &h, n, &cfg).unwrap();
        assert!(rep.retries >= 1, "{rep:?}");
        assert_eq!(rep.failures.len() as u32, rep.retries);
        assert!(rep.percdamp_used > 0.0);
        assert!(u.iter().all(|x| x.is_finite()));
        // A negative-definite H fails every attempt: the error names the tensor and the tries.
        let neg: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { -1.0 } else { 0.0 })
            .collect();
        let e = damped_inverse_cholesky("layers.0.q_proj", &neg, n, &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layers.0.q_proj") && e.contains("3 retries"),
            "{e}"
        );
    }

    #[test]
    fn act_order_is_stable_descending() {
        assert_eq!(act_order_perm(&[1.0, 3.0, 1.0, 2.0]), vec![1, 3, 0, 2]);
        let h = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(permute_symmetric(&h, 2, &[1, 0]), vec![4.0, 3.0, 2.0, 1.0]);
    }
}
