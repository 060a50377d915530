//! The batched forward pass for scoring: sequences of different lengths are packed into one
//! `[N, C]` matrix with no padding (each token attends only to the earlier tokens of its own
//! sequence), so no pad position is ever computed and no mask can leak. Logits are formed
//! only for the rows asked for.

use std::ops::Range;

use crate::backend::cpu::rmsnorm::rmsnorm;
use crate::backend::Tensor;
use crate::error::{Error, Result};

use super::block::{KvSlot, Rows, Scratch};
use super::hooks::{Captures, Hooks, Plan};
use super::layer_forward::packed_rows;
use super::weights::Llama;

/// Which positions get logits: every position costs a `[V]`-wide product, so scoring and
/// generation ask only for what they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Every position of every sequence.
    All,
    /// The last position of each sequence (the next-token distribution).
    Last,
    /// None (hidden states or captures only).
    None,
}

/// The result of `Llama::forward`.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// `[R, V]`: one row per entry of `logit_rows`; `None` with `Logits::None` or when the
    /// hooks stopped the pass early.
    pub logits: Option<Tensor>,
    /// `(sequence, position)` of each logits row.
    pub logit_rows: Vec<(usize, usize)>,
    /// The residual stream after the last layer run, `[N, C]` (packed rows), only when
    /// `Hooks::stop_after_layer` is set.
    pub hidden: Option<Tensor>,
    /// Sequence b occupies rows `offsets[b]..offsets[b+1]` of `hidden` and of every capture.
    pub offsets: Vec<usize>,
    pub captures: Captures,
}

impl ForwardOutput {
    /// The packed rows of sequence `seq`.
    pub fn rows_of(&self, seq: usize) -> Option<Range<usize>> {
        Some(*self.offsets.get(seq)?..*self.offsets.get(seq + 1)?)
    }

    /// The logits at `(seq, pos)`, if they were computed.
    pub fn logits_at(&self, seq: usize, pos: usize) -> Option<&[f32]> {
        let r = self.logit_rows.iter().position(|&sp| sp == (seq, pos))?;
        self.logits.as_ref().map(|t| t.row(r))
    }
}

/// The residual stream after the layers run, before the final norm.
pub(crate) struct Trunk {
    pub x: Vec<f32>,
    pub offsets: Vec<usize>,
    pub captures: Captures,
    pub lm_head_input: Option<String>,
    pub stopped: bool,
}

impl Llama {
    /// Checks a batch from user input: non-empty sequences of in-vocabulary ids.
    pub(crate) fn check_tokens<S: AsRef<[u32]>>(&self, batch: &[S]) -> Result<()> {
        if batch.is_empty() {
            return Err(Error::usage("tokens", "empty batch"));
        }
        let v = self.config.vocab_size;
        for (b, seq) in batch.iter().enumerate() {
            let seq = seq.as_ref();
            if seq.is_empty() {
                return Err(Error::usage("tokens", format!("sequence {b} is empty")));
            }
            if let Some(&t) = seq.iter().find(|&&t| t as usize >= v) {
                return Err(Error::usage(
                    "tokens",
                    format!("sequence {b}: token id {t} is outside the vocabulary of {v}"),
                ));
            }
        }
        Ok(())
    }

    /// Runs the batch through the layers the hooks allow.
    pub(crate) fn trunk<S: AsRef<[u32]>>(&self, batch: &[S], hooks: &Hooks) -> Result<Trunk> {
        let (x, offsets) = self.embed(batch)?;
        let mut x = x.into_data();
        let lens: Vec<usize> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let plan: Plan = hooks.plan(&self.config, &lens, &offsets)?;
        let n = offsets[lens.len()];
        let kvd = self.config.num_key_value_heads * self.config.head_dim;
        let (pos, spans) = packed_rows(&offsets);
        let (mut k, mut v) = (vec![0.0f32; n * kvd], vec![0.0f32; n * kvd]);
        let mut scratch = Scratch::default();
        let mut captures = Captures::default();
        let rows = Rows {
            pos: &pos,
            spans: &spans,
        };
        for l in 0..plan.run_layers {
            let slot = KvSlot {
                k: &mut k,
                v: &mut v,
                write_at: 0,
                dest: None,
            };
            self.block(
                l,
                &mut x,
                &rows,
                slot,
                &mut scratch,
                Some(&plan.layers[l]),
                &mut captures,
            );
        }
        Ok(Trunk {
            x,
            offsets,
            captures,
            lm_head_input: plan.lm_head_input.map(str::to_string),
            stopped: plan.stopped,
        })
    }

    /// Final norm then LM head for the given packed rows of `x`: `[rows, V]`.
    pub(crate) fn head(&self, x: &[f32], rows: &[usize]) -> Vec<f32> {
        let (c, v) = (self.config.hidden_size, self.config.vocab_size);
        let mut sel = Vec::with_capacity(rows.len() * c);
        for &r in rows {
            sel.extend_from_slice(&x[r * c..(r + 1) * c]);
        }
        let mut xn = vec![0.0f32; sel.len()];
        rmsnorm(&sel, &self.norm, self.config.rms_norm_eps as f32, &mut xn);
        let mut logits = vec![0.0f32; rows.len() * v];
        crate::backend::cpu::matmul::linear(
            &xn,
            self.head_weight(),
            None,
            &mut logits,
            rows.len(),
            c,
            v,
            false,
        );
        logits
    }

    /// The forward pass over a batch of token sequences of any lengths, with hooks.
    pub fn forward<S: AsRef<[u32]>>(
        &self,
        batch: &[S],
        logits: Logits,
        hooks: &Hooks,
    ) -> Result<ForwardOutput> {
        let trunk = self.trunk(batch, hooks)?;
        let c = self.config.hidden_size;
        let n = trunk.offsets[batch.len()];
        let mut captures = trunk.captures;
        if trunk.stopped {
            return Ok(ForwardOutput {
                logits: None,
                logit_rows: Vec::new(),
                hidden: Tensor::new(vec![n, c], trunk.x),
                offsets: trunk.offsets,
                captures,
            });
        }
        if let Some(name) = trunk.lm_head_input {
            let mut xn = vec![0.0f32; n * c];
            rmsnorm(
                &trunk.x,
                &self.norm,
                self.config.rms_norm_eps as f32,
                &mut xn,
            );
            if let Some(t) = Tensor::new(vec![n, c], xn) {
                captures.linear_inputs.insert(name, t);
            }
        }
        let logit_rows: Vec<(usize, usize)> = match logits {
            Logits::All => (0..batch.len())
                .flat_map(|b| (0..batch[b].as_ref().len()).map(move |t| (b, t)))
                .collect(),
            Logits::Last => batch
                .iter()
                .enumerate()
                .map(|(b, s)| (b, s.as_ref().len() - 1))
                .collect(),
            Logits::None => Vec::new(),
        };
        let logits = match logits {
            Logits::None => None,
            _ => {
                let rows: Vec<usize> = logit_rows
                    .iter()
                    .map(|&(b, t)| trunk.offsets[b] + t)
                    .collect();
                Tensor::new(
                    vec![rows.len(), self.config.vocab_size],
                    self.head(&trunk.x, &rows),
                )
            }
        };
        Ok(ForwardOutput {
            logits,
            logit_rows,
            hidden: None,
            offsets: trunk.offsets,
            captures,
        })
    }
}
