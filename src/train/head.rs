//! The final norm and LM head for training, over the rows some logit loss reads only, in
//! chunks so the `[rows, V]` logits never exist for the whole batch at once. With tied
//! embeddings the head's weight gradient is the embedding's.
//!
//! Legend: R = rows in a chunk, C = hidden, V = vocabulary.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::backend::cpu::matmul::linear;
use crate::model::Llama;

use super::linear::linear_backward;
use super::loss::cross_entropy::{cross_entropy_row, log_softmax};
use super::loss::kl::kl_row;
use super::rmsnorm::{rmsnorm_backward, rmsnorm_forward};

/// Rows per chunk: 256 rows of a 49k vocabulary are 48 MiB of logits (which become their
/// gradient in place). Each chunk streams the whole head weight twice (forward and input
/// gradient), so fewer, larger chunks read it less often: 64 rows cost ~1.4 s more per
/// 1024-row step on SmolLM2.
const CHUNK_ROWS: usize = 256;

/// The logit losses at one packed row, weights already multiplied by their term's weight.
#[derive(Default)]
pub(crate) struct RowLoss<'a> {
    pub ce: Vec<(u32, f32)>,
    pub kl: Vec<(&'a [f32], f32)>,
}

/// The name the head's weight gradient goes to.
pub(crate) fn head_grad_name(model: &Llama) -> &'static str {
    if model.config.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    }
}

/// Runs norm, head and losses on the listed rows of `x` (`[N, C]`), adds the input gradient
/// to `dx` and the norm's and head's to `grads` where present; returns the loss.
pub(crate) fn head_loss_backward(
    model: &Llama,
    x: &[f32],
    work: &BTreeMap<usize, RowLoss>,
    dx: &mut [f32],
    grads: &mut BTreeMap<String, Vec<f32>>,
) -> f64 {
    let (c, v) = (model.config.hidden_size, model.config.vocab_size);
    let eps = model.config.rms_norm_eps as f32;
    let w = model.head_weight();
    let head_name = head_grad_name(model);
    let rows: Vec<(&usize, &RowLoss)> = work.iter().collect();
    let mut loss = 0.0f64;
    // One logits buffer for every chunk instead of a fresh 48 MiB one each (the head's
    // product overwrites it, so nothing carries over between chunks).
    let mut logits_buf = vec![0.0f32; CHUNK_ROWS.min(rows.len()) * v];
    for chunk in rows.chunks(CHUNK_ROWS) {
        let rc = chunk.len();
        let xs: Vec<f32> = chunk
            .iter()
            .flat_map(|(&r, _)| x[r * c..(r + 1) * c].iter().copied())
            .collect();
        let (mut xn, mut rr) = (vec![0.0; rc * c], vec![0.0; rc]);
        rmsnorm_forward(&xs, &model.norm, eps, &mut xn, &mut rr);
        let logits = &mut logits_buf[..rc * v];
        linear(&xn, w, None, logits, rc, c, v, false);
        // The logits buffer becomes the gradient, row by row, after its loss is read.
        let losses: Vec<f64> = logits
            .par_chunks_mut(v)
            .zip(chunk.par_iter())
            .map_init(
                || vec![0.0f32; v],
                |logp, (row, (_, rl))| {
                    log_softmax(row, logp);
                    row.fill(0.0);
                    let mut l = cross_entropy_row(logp, &rl.ce, row);
                    for &(init, wt) in &rl.kl {
                        l += kl_row(logp, init, wt, row);
                    }
                    l
                },
            )
            .collect();
        loss += losses.iter().sum::<f64>();
        let dlogits = &*logits;
        let mut dxn = vec![0.0; rc * c];
        let dw = grads.get_mut(head_name).map(|g| &mut g[..]);
        linear_backward(dlogits, &xn, w, rc, c, v, Some(&mut dxn), dw, None);
        let mut dxs = vec![0.0; rc * c];
        let dnorm = grads.get_mut("model.norm.weight").map(|g| &mut g[..]);
        rmsnorm_backward(&dxn, &xs, &model.norm, &rr, &mut dxs, dnorm);
        for ((&r, _), g) in chunk.iter().zip(dxs.chunks_exact(c)) {
            for (a, b) in dx[r * c..(r + 1) * c].iter_mut().zip(g) {
                *a += b;
            }
        }
    }
    loss
}
