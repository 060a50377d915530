//! Per-position negative log-likelihoods (for perplexity): position t scores token t+1 given
//! tokens `<= t`, from f32 logits through a max-shifted log-softmax.

use rayon::prelude::*;

use crate::backend::cpu::softmax::nll;
use crate::error::Result;

use super::hooks::Hooks;
use super::weights::Llama;

/// Logit rows formed at a time: bounds the `[rows, V]` buffer for long inputs (256 x 49k
/// f32 is 50 MB) while streaming the head weight once per 256 rows rather than per 64.
const HEAD_CHUNK: usize = 256;

impl Llama {
    /// NLLs of `tokens[1..]`: `len - 1` values (none for a single token).
    pub fn sequence_nll(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut out = self.batch_nll(&[tokens])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// `sequence_nll` for every sequence of a batch, in one packed forward pass.
    pub fn batch_nll<S: AsRef<[u32]>>(&self, batch: &[S]) -> Result<Vec<Vec<f32>>> {
        let trunk = self.trunk(batch, &Hooks::default())?;
        let v = self.config.vocab_size;
        // (packed row, target token, sequence) for every scored position.
        let mut targets = Vec::new();
        for (b, seq) in batch.iter().enumerate() {
            let seq = seq.as_ref();
            for t in 0..seq.len() - 1 {
                targets.push((trunk.offsets[b] + t, seq[t + 1], b));
            }
        }
        let mut out: Vec<Vec<f32>> = batch
            .iter()
            .map(|s| Vec::with_capacity(s.as_ref().len()))
            .collect();
        for chunk in targets.chunks(HEAD_CHUNK) {
            let rows: Vec<usize> = chunk.iter().map(|&(r, _, _)| r).collect();
            let logits = self.head(&trunk.x, &rows);
            // Each row's log-softmax over the vocabulary is independent: one task per row.
            let nlls: Vec<f32> = logits
                .par_chunks_exact(v)
                .zip(chunk)
                .map(|(row, &(_, target, _))| nll(row, target as usize))
                .collect();
            for (l, &(_, _, b)) in nlls.into_iter().zip(chunk) {
                out[b].push(l);
            }
        }
        Ok(out)
    }
}
