//! Per-position negative log-likelihoods (for perplexity): position t scores token t+1 given
//! tokens `<= t`, from f32 logits through a max-shifted log-softmax.

use crate::backend::cpu::softmax::nll;
use crate::error::Result;

use super::hooks::Hooks;
use super::weights::Llama;

/// Logit rows formed at a time: bounds the `[rows, V]` buffer for long inputs.
const HEAD_CHUNK: usize = 64;

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
            for (row, &(_, target, b)) in logits.chunks_exact(v).zip(chunk) {
                out[b].push(nll(row, target as usize));
            }
        }
        Ok(out)
    }
}
