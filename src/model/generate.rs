//! Greedy generation with a KV cache: the prompt is run once (prefill), then one token per
//! step, each step reading the cached keys/values of all earlier positions. Buffers are sized
//! once, so a decode step allocates nothing.

use crate::backend::cpu::argmax::argmax;
use crate::backend::cpu::attention::KeySpan;
use crate::backend::cpu::embedding::embed;
use crate::backend::cpu::matmul::linear;
use crate::backend::cpu::rmsnorm::rmsnorm;
use crate::error::{Error, Result};

use super::block::{KvSlot, Rows, Scratch};
use super::hooks::Captures;
use super::weights::Llama;

/// An incremental decoder over one sequence: `feed` appends tokens and returns the
/// next-token logits.
pub struct Decoder<'m> {
    model: &'m Llama,
    /// Per layer, `[capacity, G*D]` keys (rotated) and values.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    capacity: usize,
    scratch: Scratch,
    x: Vec<f32>,
    pos: Vec<usize>,
    spans: Vec<KeySpan>,
    xn: Vec<f32>,
    logits: Vec<f32>,
    captures: Captures,
}

impl<'m> Decoder<'m> {
    /// A decoder whose cache holds `capacity` positions (it grows if more are fed).
    pub fn new(model: &'m Llama, capacity: usize) -> Self {
        let cfg = &model.config;
        let kvd = cfg.num_key_value_heads * cfg.head_dim;
        let layers = cfg.num_hidden_layers;
        Decoder {
            model,
            k: (0..layers).map(|_| vec![0.0; capacity * kvd]).collect(),
            v: (0..layers).map(|_| vec![0.0; capacity * kvd]).collect(),
            len: 0,
            capacity,
            scratch: Scratch::default(),
            x: Vec::new(),
            pos: Vec::new(),
            spans: Vec::new(),
            xn: vec![0.0; cfg.hidden_size],
            logits: vec![0.0; cfg.vocab_size],
            captures: Captures::default(),
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `tokens` (the prompt, or one generated token) and returns the logits for the
    /// token after the last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let model = self.model;
        let cfg = &model.config;
        if tokens.is_empty() {
            return Err(Error::usage("tokens", "nothing to feed"));
        }
        model.check_tokens(&[tokens])?;
        let (m, c) = (tokens.len(), cfg.hidden_size);
        let kvd = cfg.num_key_value_heads * cfg.head_dim;
        if self.len + m > self.capacity {
            self.capacity = (self.len + m).max(2 * self.capacity);
            for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
                buf.resize(self.capacity * kvd, 0.0);
            }
        }
        self.x.resize(m * c, 0.0);
        embed(&model.embed, c, tokens, &mut self.x);
        self.pos.clear();
        self.pos.extend(self.len..self.len + m);
        self.spans.clear();
        self.spans.extend((0..m).map(|r| KeySpan {
            start: 0,
            len: self.len + r + 1,
        }));
        let rows = Rows {
            pos: &self.pos,
            spans: &self.spans,
        };
        for l in 0..cfg.num_hidden_layers {
            let slot = KvSlot {
                k: &mut self.k[l],
                v: &mut self.v[l],
                write_at: self.len,
                dest: None,
            };
            model.block(
                l,
                &mut self.x,
                &rows,
                slot,
                &mut self.scratch,
                None,
                &mut self.captures,
            );
        }
        self.len += m;
        // Only the last row needs logits: one GEMV over the LM head.
        let last = &self.x[(m - 1) * c..m * c];
        rmsnorm(last, &model.norm, cfg.rms_norm_eps as f32, &mut self.xn);
        linear(
            &self.xn,
            model.head_weight(),
            None,
            &mut self.logits,
            1,
            c,
            cfg.vocab_size,
            false,
        );
        Ok(&self.logits)
    }
}

impl Llama {
    /// Greedy decoding: prefill `prompt`, then up to `max_tokens` tokens, each the argmax of
    /// the logits (ties go to the lowest token id, as `torch.argmax`). Stops after emitting a
    /// token in `stop`, which is included as the last element. Returns the new tokens only.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(max_tokens);
        if max_tokens == 0 {
            self.check_tokens(&[prompt])?;
            return Ok(out);
        }
        let mut dec = Decoder::new(self, prompt.len() + max_tokens);
        let mut logits = dec.feed(prompt)?;
        loop {
            let next = argmax(logits)
                .ok_or_else(|| Error::Check("generation: every logit is NaN".into()))?
                as u32;
            out.push(next);
            if out.len() == max_tokens || stop.contains(&next) {
                return Ok(out);
            }
            logits = dec.feed(&[next])?;
        }
    }
}
