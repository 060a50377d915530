//! The key covariance `C = E[k kᵀ]` of a layer's `down_proj` input over a text corpus
//! (ROME/MEMIT `layer_stats`: uncentred second moment, every token counted, accumulated and
//! stored in f32 by the reference; we accumulate in f64 and store f32), computed in one
//! streaming pass that stops after the highest layer needed, and cached on disk.
//!
//! Samples: the corpus documents in order, each tokenised (special tokens as the tokenizer adds
//! them) and cut into consecutive pieces of at most `seqlen` tokens; the first `samples`
//! pieces of two or more tokens are used. (The reference takes a seeded random subset of
//! Wikipedia articles, each truncated to the model's context; a fixed order keeps the cache
//! key meaningful without a seed.)
//!
//! Cache: one file per (model id, layer, corpus blake3, samples, seqlen) under the cache
//! directory, named by the blake3 of that key, written atomically. Layout: magic
//! `INTVCOV1`, u64 LE header length, a JSON header repeating the key and the shape, then
//! `dim²` f32 LE. A file found there is treated as untrusted: magic, header size, key, shape,
//! exact file size and finiteness are checked before use, and a mismatch is an error naming
//! the file (delete it to recompute). The step record names each file's blake3.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{hash_file, replace_file};
use crate::data::read_text_corpus;
use crate::error::{Error, Result};
use crate::linalg::gram_f32;
use crate::model::{Hooks, Llama, Logits};
use crate::tokenizer::Tokenizer;

use super::key::down_proj;

const MAGIC: &[u8; 8] = b"INTVCOV1";
const MAX_HEADER: u64 = 64 * 1024;
const KIND: &str = "covariance statistic";
/// Tokens per forward pass of the streaming pass.
const BATCH_TOKENS: usize = 4096;

/// Which statistic to use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsSpec {
    pub corpus: PathBuf,
    pub samples: usize,
    pub seqlen: usize,
    pub cache_dir: PathBuf,
}

/// The cache key and shape, as stored in the file header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsKey {
    pub model: String,
    pub layer: usize,
    pub module: String,
    pub corpus: String,
    pub samples: usize,
    pub seqlen: usize,
    pub dim: usize,
}

/// A loaded statistic.
#[derive(Clone, Debug)]
pub struct Covariance {
    pub key: StatsKey,
    /// Tokens counted.
    pub count: u64,
    /// `[dim, dim]` row-major mean of `k kᵀ`.
    pub moment: Vec<f32>,
    pub path: PathBuf,
    /// blake3 of the cache file.
    pub hash: String,
    /// True when read from the cache, false when computed by this run.
    pub reused: bool,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    key: StatsKey,
    count: u64,
    dtype: String,
}

/// The default cache directory: `$XDG_CACHE_HOME/intervene`, else `~/.cache/intervene`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("intervene"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("intervene"))
}

impl Covariance {
    /// A statistic held in memory only (tests, or a caller with its own moments).
    pub fn in_memory(key: StatsKey, count: u64, moment: Vec<f32>) -> Result<Self> {
        if moment.len() != key.dim * key.dim || count == 0 {
            return Err(Error::Check(format!(
                "covariance of {} values for dim {} ({count} tokens)",
                moment.len(),
                key.dim
            )));
        }
        Ok(Covariance {
            key,
            count,
            moment,
            path: PathBuf::new(),
            hash: String::new(),
            reused: false,
        })
    }
}

impl StatsKey {
    fn file_name(&self) -> String {
        let text = format!(
            "model={}\nlayer={}\nmodule={}\ncorpus={}\nsamples={}\nseqlen={}\ndim={}",
            self.model, self.layer, self.module, self.corpus, self.samples, self.seqlen, self.dim
        );
        let h = blake3::hash(text.as_bytes()).to_hex();
        format!("cov-{}.bin", &h[..32])
    }
}

/// The statistics of `layers` (in that order), read from the cache or computed in one pass.
pub fn layer_stats(
    model: &Llama,
    model_id: &str,
    tok: &Tokenizer,
    layers: &[usize],
    spec: &StatsSpec,
) -> Result<Vec<Covariance>> {
    if spec.samples == 0 {
        return Err(Error::usage("--stats-samples", "must be at least 1"));
    }
    if spec.seqlen < 2 {
        return Err(Error::usage("--stats-seqlen", "must be at least 2"));
    }
    let cfg = model.config();
    let corpus_hash = hash_file(&spec.corpus)?;
    let keys: Vec<StatsKey> = layers
        .iter()
        .map(|&l| StatsKey {
            model: model_id.to_string(),
            layer: l,
            module: down_proj(l),
            corpus: corpus_hash.clone(),
            samples: spec.samples,
            seqlen: spec.seqlen,
            dim: cfg.intermediate_size,
        })
        .collect();
    let mut found: Vec<Option<Covariance>> = Vec::new();
    for k in &keys {
        let path = spec.cache_dir.join(k.file_name());
        found.push(if path.exists() {
            Some(read_cached(&path, k)?)
        } else {
            None
        });
    }
    let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
    if !missing.is_empty() {
        let want: Vec<usize> = missing.iter().map(|&i| keys[i].layer).collect();
        let pieces = stats_pieces(tok, spec)?;
        let (sums, count) = second_moment_sums(model, &want, &pieces)?;
        std::fs::create_dir_all(&spec.cache_dir)
            .map_err(|e| Error::io("create cache directory", &spec.cache_dir, e))?;
        for (&i, sum) in missing.iter().zip(sums) {
            let moment: Vec<f32> = sum.iter().map(|s| (s / count as f64) as f32).collect();
            let path = spec.cache_dir.join(keys[i].file_name());
            let bytes = encode(&keys[i], count, &moment)?;
            replace_file(&path, &bytes)?;
            found[i] = Some(Covariance {
                key: keys[i].clone(),
                count,
                moment,
                hash: format!("blake3:{}", blake3::hash(&bytes).to_hex()),
                path,
                reused: false,
            });
        }
    }
    found
        .into_iter()
        .map(|c| c.ok_or_else(|| Error::Check("covariance missing after the pass".into())))
        .collect()
}

/// The token pieces the statistic is taken over.
pub fn stats_pieces(tok: &Tokenizer, spec: &StatsSpec) -> Result<Vec<Vec<u32>>> {
    let corpus = read_text_corpus(&spec.corpus)?;
    let mut pieces = Vec::new();
    'docs: for d in &corpus.documents {
        let ids = tok.encode(d, true)?;
        for chunk in ids.chunks(spec.seqlen) {
            if chunk.len() >= 2 {
                pieces.push(chunk.to_vec());
                if pieces.len() == spec.samples {
                    break 'docs;
                }
            }
        }
    }
    if pieces.is_empty() {
        return Err(Error::format(
            KIND,
            &spec.corpus,
            "documents",
            "no piece of two or more tokens",
        ));
    }
    Ok(pieces)
}

/// Σ k kᵀ (f64, per layer) and the token count over every token of `pieces`, in one pass
/// stopping after the top layer.
pub fn second_moment_sums(
    model: &Llama,
    layers: &[usize],
    pieces: &[Vec<u32>],
) -> Result<(Vec<Vec<f64>>, u64)> {
    let n = model.config().intermediate_size;
    let top = layers.iter().copied().max().unwrap_or(0);
    let mut hooks = Hooks {
        stop_after_layer: Some(top),
        ..Hooks::default()
    };
    for &l in layers {
        hooks.capture_linear_inputs.insert(down_proj(l));
    }
    let mut sums = vec![vec![0f64; n * n]; layers.len()];
    let mut count = 0u64;
    let mut i = 0;
    while i < pieces.len() {
        let mut j = i;
        let mut toks = 0;
        while j < pieces.len() && (j == i || toks + pieces[j].len() <= BATCH_TOKENS) {
            toks += pieces[j].len();
            j += 1;
        }
        let out = model.forward(&pieces[i..j], Logits::None, &hooks)?;
        for (li, &l) in layers.iter().enumerate() {
            let name = down_proj(l);
            let x = out
                .captures
                .linear_inputs
                .get(&name)
                .ok_or_else(|| Error::Check(format!("forward did not capture `{name}`")))?;
            let g = gram_f32(x.data(), toks, n);
            sums[li]
                .iter_mut()
                .zip(&g)
                .for_each(|(s, v)| *s += f64::from(*v));
        }
        count += toks as u64;
        i = j;
    }
    Ok((sums, count))
}

fn encode(key: &StatsKey, count: u64, moment: &[f32]) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(&Header {
        format: 1,
        key: key.clone(),
        count,
        dtype: "f32".into(),
    })
    .map_err(|e| Error::Check(format!("covariance header: {e}")))?;
    let mut b = Vec::with_capacity(16 + header.len() + moment.len() * 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(header.len() as u64).to_le_bytes());
    b.extend_from_slice(&header);
    for v in moment {
        b.extend_from_slice(&v.to_le_bytes());
    }
    Ok(b)
}

/// Reads and checks a cache file against the key it should hold.
pub fn read_cached(path: &Path, want: &StatsKey) -> Result<Covariance> {
    let bad = |field: &str, msg: String| {
        Error::format(
            KIND,
            path,
            field,
            format!("{msg} (delete the file to recompute it)"),
        )
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("magic", "not an intervene covariance file".into()));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
    if hlen > MAX_HEADER || 16 + hlen as usize > bytes.len() {
        return Err(bad("header", format!("header length {hlen} out of bounds")));
    }
    let hend = 16 + hlen as usize;
    let header: Header = serde_json::from_slice(&bytes[16..hend])
        .map_err(|e| bad("header", format!("not the expected JSON: {e}")))?;
    if header.format != 1 || header.dtype != "f32" {
        return Err(bad(
            "header",
            format!("format {} dtype {:?}", header.format, header.dtype),
        ));
    }
    if &header.key != want {
        return Err(bad(
            "key",
            format!("holds {:?}, expected {:?}", header.key, want),
        ));
    }
    let dim = want.dim;
    let data_len = dim
        .checked_mul(dim)
        .and_then(|x| x.checked_mul(4))
        .ok_or_else(|| bad("dim", format!("{dim} overflows")))?;
    if bytes.len() - hend != data_len {
        return Err(bad(
            "data",
            format!(
                "{} bytes of data, a {dim} x {dim} f32 matrix needs {data_len}",
                bytes.len() - hend
            ),
        ));
    }
    if header.count == 0 {
        return Err(bad("count", "zero tokens".into()));
    }
    let moment: Vec<f32> = bytes[hend..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = moment.iter().position(|v| !v.is_finite()) {
        return Err(bad("data", format!("non-finite value at flat index {i}")));
    }
    if let Some(i) = (0..dim).find(|&i| moment[i * dim + i] < 0.0) {
        return Err(bad("data", format!("negative diagonal entry {i}")));
    }
    Ok(Covariance {
        key: header.key,
        count: header.count,
        moment,
        path: path.to_path_buf(),
        hash: format!("blake3:{}", blake3::hash(&bytes).to_hex()),
        reused: true,
    })
}
