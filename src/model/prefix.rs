//! Scoring many sequences that open with the same tokens (every MMLU question of a subject
//! opens with the same task description): the prefix's keys and values are computed once per
//! layer and copied in front of each sequence's own rows, so the batch runs only the rows
//! after the prefix. Each row sees the same keys through the same kernels as in the forward
//! pass of the whole sequence; only the products' blocking follows the (shorter) batch, so
//! the last-position logits agree to rounding.

use std::collections::HashMap;

use crate::backend::cpu::attention::KeySpan;
use crate::backend::cpu::embedding::embed;
use crate::error::{Error, Result};

use super::block::{run_block_kept, KvSlot, Rows, Scratch};
use super::hooks::Captures;
use super::layer_forward::packed_rows;
use super::weights::Llama;

/// The rotated keys and the values of a token prefix at every layer.
#[derive(Clone, Debug)]
pub struct PrefixKv {
    len: usize,
    /// Per layer, `[len, G*D]`.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl PrefixKv {
    /// No prefix: the sequence is scored whole.
    pub fn none(layers: usize) -> Self {
        PrefixKv {
            len: 0,
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Prefixes computed so far, by their tokens, within `BUDGET_BYTES` of keys and values.
#[derive(Debug, Default)]
pub struct PrefixCache {
    map: HashMap<Vec<u32>, PrefixKv>,
    bytes: usize,
}

/// Questions come subject by subject, so few prefixes are in use at a time; this holds
/// thousands of MMLU descriptions for a 135M model and dozens for an 8B one.
const BUDGET_BYTES: usize = 128 << 20;

/// Rows per packed prefix pass: a description is a few tokens, too few rows for the products
/// to run well alone, so prefixes are computed many at a time.
const PACK_ROWS: usize = 2048;

impl PrefixCache {
    /// Computes every prefix in `keys` not yet held (empty keys need none), emptying the
    /// cache first when they would not fit beside what it holds, so that all of `keys` are
    /// held afterwards.
    pub fn ensure(&mut self, model: &Llama, keys: &[&[u32]]) -> Result<()> {
        let new = self.missing(keys);
        let need: usize = new.iter().map(|k| prefix_bytes(model, k.len())).sum();
        if self.bytes + need > BUDGET_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        self.compute(model, &new)
    }

    /// Computes, in order, as many of the missing `keys` as fit the budget: called with a
    /// whole question list before scoring, so each batch finds its prefixes ready.
    pub fn warm(&mut self, model: &Llama, keys: &[&[u32]]) -> Result<()> {
        let mut room = BUDGET_BYTES.saturating_sub(self.bytes);
        let fits: Vec<&[u32]> = self
            .missing(keys)
            .into_iter()
            .take_while(|k| {
                let b = prefix_bytes(model, k.len());
                let ok = b <= room;
                room = room.saturating_sub(b);
                ok
            })
            .collect();
        self.compute(model, &fits)
    }

    /// The distinct non-empty keys not held, in first-seen order.
    fn missing<'k>(&self, keys: &[&'k [u32]]) -> Vec<&'k [u32]> {
        let mut seen = std::collections::HashSet::new();
        keys.iter()
            .copied()
            .filter(|k| !k.is_empty() && !self.map.contains_key(*k) && seen.insert(*k))
            .collect()
    }

    fn compute(&mut self, model: &Llama, keys: &[&[u32]]) -> Result<()> {
        let mut rest = keys;
        while !rest.is_empty() {
            let mut rows = 0;
            let n = rest
                .iter()
                .take_while(|k| {
                    rows += k.len();
                    rows <= PACK_ROWS
                })
                .count()
                .max(1);
            let (pack, tail) = rest.split_at(n);
            for (key, kv) in pack.iter().zip(model.prefixes_kv(pack)?) {
                self.bytes += prefix_bytes(model, key.len());
                self.map.insert(key.to_vec(), kv);
            }
            rest = tail;
        }
        Ok(())
    }

    /// A prefix `ensure` or `warm` computed.
    pub fn get(&self, tokens: &[u32]) -> Option<&PrefixKv> {
        self.map.get(tokens)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn prefix_bytes(model: &Llama, len: usize) -> usize {
    let cfg = model.config();
    2 * cfg.num_hidden_layers * len * cfg.num_key_value_heads * cfg.head_dim * 4
}

impl Llama {
    /// Runs `prefix` through every layer and keeps each layer's keys and values.
    pub fn prefix_kv(&self, prefix: &[u32]) -> Result<PrefixKv> {
        let mut all = self.prefixes_kv(&[prefix])?;
        all.pop()
            .ok_or_else(|| Error::Check("prefix: no keys computed".into()))
    }

    /// `prefix_kv` of several prefixes, packed into one batch: a prefix is a few tokens, too
    /// few rows for the products to run well alone.
    pub fn prefixes_kv(&self, prefixes: &[&[u32]]) -> Result<Vec<PrefixKv>> {
        let cfg = &self.config;
        let kvd = cfg.num_key_value_heads * cfg.head_dim;
        let (x, offsets) = self.embed(prefixes)?;
        let mut x = x.into_data();
        let (pos, spans) = packed_rows(&offsets);
        let m = pos.len();
        let rows = Rows {
            pos: &pos,
            spans: &spans,
        };
        let layers = cfg.num_hidden_layers;
        let mut k: Vec<Vec<f32>> = (0..layers).map(|_| vec![0.0; m * kvd]).collect();
        let mut v: Vec<Vec<f32>> = (0..layers).map(|_| vec![0.0; m * kvd]).collect();
        let (mut scratch, mut caps) = (Scratch::default(), Captures::default());
        for l in 0..layers {
            let slot = KvSlot {
                k: &mut k[l],
                v: &mut v[l],
                write_at: 0,
                dest: None,
            };
            self.block(l, &mut x, &rows, slot, &mut scratch, None, &mut caps);
        }
        let cut = |buf: &[Vec<f32>], r: std::ops::Range<usize>| -> Vec<Vec<f32>> {
            buf.iter()
                .map(|layer| layer[r.start * kvd..r.end * kvd].to_vec())
                .collect()
        };
        Ok(prefixes
            .iter()
            .zip(&offsets)
            .map(|(p, &s)| PrefixKv {
                len: p.len(),
                k: cut(&k, s..s + p.len()),
                v: cut(&v, s..s + p.len()),
            })
            .collect())
    }

    /// The last-position logits of each sequence `prefix ++ rest`, running only the `rest`
    /// rows (each non-empty), packed into one batch as `forward` packs sequences, and in the
    /// last layer only each sequence's last row past the keys and values.
    pub fn last_logits_after(&self, batch: &[(&PrefixKv, &[u32])]) -> Result<Vec<Vec<f32>>> {
        let rests: Vec<&[u32]> = batch.iter().map(|(_, r)| *r).collect();
        self.check_tokens(&rests)?;
        let cfg = &self.config;
        let c = cfg.hidden_size;
        let kvd = cfg.num_key_value_heads * cfg.head_dim;
        let layers = cfg.num_hidden_layers;
        let ctx = cfg.max_position_embeddings;
        // Key rows: sequence b owns `base[b]..base[b] + prefix + rest`; its query rows are the
        // rest only.
        let (mut pos, mut spans, mut dest, mut base) = (vec![], vec![], vec![], vec![]);
        let mut key_rows = 0;
        for (b, (pre, rest)) in batch.iter().enumerate() {
            if pre.k.len() != layers || pre.len + rest.len() > ctx {
                return Err(Error::usage(
                    "tokens",
                    format!(
                        "sequence {b}: a prefix of {} layers and {} + {} tokens does not fit \
                         this model ({layers} layers, context {ctx})",
                        pre.k.len(),
                        pre.len,
                        rest.len()
                    ),
                ));
            }
            base.push(key_rows);
            for t in 0..rest.len() {
                pos.push(pre.len + t);
                spans.push(KeySpan {
                    start: key_rows,
                    len: pre.len + t + 1,
                });
                dest.push(key_rows + pre.len + t);
            }
            key_rows += pre.len + rest.len();
        }
        let n = pos.len();
        let tokens: Vec<u32> = rests.iter().flat_map(|r| r.iter()).copied().collect();
        let mut x = vec![0.0f32; n * c];
        embed(&self.embed, c, &tokens, &mut x);
        let (mut k, mut v) = (vec![0.0f32; key_rows * kvd], vec![0.0f32; key_rows * kvd]);
        let (mut scratch, mut caps) = (Scratch::default(), Captures::default());
        let rows = Rows {
            pos: &pos,
            spans: &spans,
        };
        let mut last = Vec::with_capacity(batch.len());
        let mut row = 0;
        for r in &rests {
            row += r.len();
            last.push(row - 1);
        }
        let mut out = Vec::new();
        for l in 0..layers {
            for ((pre, _), &at) in batch.iter().zip(&base) {
                let span = at * kvd..(at + pre.len) * kvd;
                k[span.clone()].copy_from_slice(&pre.k[l]);
                v[span].copy_from_slice(&pre.v[l]);
            }
            let slot = KvSlot {
                k: &mut k,
                v: &mut v,
                write_at: 0,
                dest: Some(&dest),
            };
            if l + 1 < layers {
                self.block(l, &mut x, &rows, slot, &mut scratch, None, &mut caps);
            } else {
                // Only the last rows' output is read: the last block runs for them alone.
                out = run_block_kept(
                    &self.block_ctx(),
                    &self.layers[l],
                    &x,
                    &rows,
                    slot,
                    &mut scratch,
                    &last,
                );
            }
        }
        let logits = self.head(&out, &(0..last.len()).collect::<Vec<_>>());
        let vocab = cfg.vocab_size;
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::model::{Hooks, Logits};
    use std::path::Path;

    fn tiny() -> Llama {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny/hf");
        Llama::load(&Checkpoint::open(&dir).unwrap()).unwrap()
    }

    /// Sequences with a shared opening scored after a cached prefix give the logits of the
    /// whole sequences scored by the forward pass, to rounding (measured: at most 2e-6 here).
    #[test]
    fn prefix_then_rest_equals_the_whole_sequence() {
        let model = tiny();
        let vocab = model.config().vocab_size as u32;
        let opening: Vec<u32> = (0..13).map(|i| (i * 7 + 3) % vocab).collect();
        let rests: Vec<Vec<u32>> = [5usize, 1, 40, 17]
            .iter()
            .enumerate()
            .map(|(s, &n)| {
                (0..n as u32)
                    .map(|i| (i * 11 + s as u32 * 5 + 1) % vocab)
                    .collect()
            })
            .collect();
        let whole: Vec<Vec<u32>> = rests
            .iter()
            .map(|r| opening.iter().chain(r).copied().collect())
            .collect();
        let refs: Vec<&[u32]> = whole.iter().map(Vec::as_slice).collect();
        let fwd = model
            .forward(&refs, Logits::Last, &Hooks::default())
            .unwrap();
        let expected: Vec<Vec<f32>> = refs
            .iter()
            .enumerate()
            .map(|(b, s)| fwd.logits_at(b, s.len() - 1).unwrap().to_vec())
            .collect();

        let mut cache = PrefixCache::default();
        cache.ensure(&model, &[&opening, &opening, &[]]).unwrap();
        let pre = cache.get(&opening).unwrap().clone();
        let short = model.prefix_kv(&opening[..4]).unwrap();
        let none = PrefixKv::none(model.config().num_hidden_layers);
        // A batch mixing two prefixes of the same opening.
        let tail: Vec<u32> = opening[4..].iter().chain(&rests[2]).copied().collect();
        let batch: Vec<(&PrefixKv, &[u32])> = vec![
            (&pre, &rests[0]),
            (&pre, &rests[1]),
            (&short, &tail),
            (&none, &whole[3]),
        ];
        let got = model.last_logits_after(&batch).unwrap();
        assert_eq!(got.len(), 4);
        for (b, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g.len(), e.len());
            let worst = g
                .iter()
                .zip(e)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= PREFIX_TOL, "sequence {b}: max |diff| {worst}");
        }
        assert_eq!(cache.len(), 1);
    }

    /// Tiles and product blocks start at different rows than in the whole forward, which
    /// moves the last bits of a few sums; a wrong key or position would move logits by O(1).
    const PREFIX_TOL: f32 = 1e-5;

    #[test]
    fn a_prefix_that_overruns_the_context_is_refused() {
        let model = tiny();
        let ctx = model.config().max_position_embeddings;
        let pre = model.prefix_kv(&vec![1u32; ctx]).unwrap();
        let rest = [2u32];
        let err = model.last_logits_after(&[(&pre, &rest[..])]).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        assert!(model.last_logits_after(&[(&pre, &[][..])]).is_err());
    }
}
