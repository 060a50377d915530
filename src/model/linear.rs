//! A linear layer's weights in PyTorch layout (`[out, in]` row-major) and its product.

use crate::backend::cpu::matmul;

#[derive(Clone, Debug)]
pub(crate) struct Linear {
    /// `[out, in]` row-major.
    pub w: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out: usize,
    pub inp: usize,
}

impl Linear {
    /// `y[M, out] (+)= x[M, in] W^T + b`.
    pub fn forward(&self, x: &[f32], y: &mut [f32], m: usize, accumulate: bool) {
        matmul::linear(
            x,
            &self.w,
            self.bias.as_deref(),
            y,
            m,
            self.inp,
            self.out,
            accumulate,
        );
    }

    /// Stacks linears that read the same input into one (rows of the first, then the next),
    /// so q/k/v and gate/up each run as one wider GEMM. The config gives a bias to all
    /// parts of a group or to none, so the stacked bias is all or nothing too.
    pub fn stack(parts: Vec<Linear>) -> Linear {
        let inp = parts.first().map_or(0, |p| p.inp);
        let has_bias = parts.iter().all(|p| p.bias.is_some());
        let mut stacked = Linear {
            w: Vec::new(),
            bias: has_bias.then(Vec::new),
            out: 0,
            inp,
        };
        for p in parts {
            stacked.out += p.out;
            stacked.w.extend_from_slice(&p.w);
            if let (Some(sb), Some(pb)) = (stacked.bias.as_mut(), p.bias.as_ref()) {
                sb.extend_from_slice(pb);
            }
        }
        stacked
    }
}
