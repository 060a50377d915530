//! Calibration windows for GPTQ, SparseGPT, Wanda and AWQ-style compressors, sampled as GPTQ's
//! `datautils.get_c4` does (algorithms.md §2 "Inputs"): `n_samples` times, pick a random document
//! with **more than** `seqlen` tokens, then a random start in `0..=len - seqlen - 1` (Python's
//! `random.randint(0, len - seqlen - 1)`, so a window never ends on a document's last token),
//! and take `seqlen` tokens from there. Documents may be picked more than once.
//!
//! The reference redraws documents until one is long enough; choosing uniformly among the long
//! documents gives the same distribution and cannot loop forever on a corpus of short ones.
//! The generator is [`SplitMix64`], not Python's Mersenne Twister (algorithms.md §13 item 10:
//! record the realised token ids, do not chase bit-exact Python streams).
//!
//! Tokenisation is the caller's: pass one token list per document, or a single concatenated
//! stream as a one-element slice (GPTQ's wikitext2 loader).

use std::path::Path;

use super::rng::SplitMix64;
use crate::error::{Error, Result};

/// Where one window was taken from: document index and first token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub doc: usize,
    pub start: usize,
}

/// Samples `n_samples` windows of `seqlen` tokens and returns their token ids. `source` names
/// the corpus file in errors.
pub fn sample_windows(
    source: &Path,
    docs: &[Vec<u32>],
    n_samples: usize,
    seqlen: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    let windows = sample_window_positions(source, docs, n_samples, seqlen, seed)?;
    Ok(windows
        .iter()
        .filter_map(|w| docs.get(w.doc)?.get(w.start..w.start + seqlen))
        .map(<[u32]>::to_vec)
        .collect())
}

/// The positions [`sample_windows`] takes its windows from, for provenance records.
pub fn sample_window_positions(
    source: &Path,
    docs: &[Vec<u32>],
    n_samples: usize,
    seqlen: usize,
    seed: u64,
) -> Result<Vec<Window>> {
    if n_samples == 0 {
        return Err(Error::usage("n_samples", "must be at least 1"));
    }
    if seqlen == 0 {
        return Err(Error::usage("seqlen", "must be at least 1"));
    }
    let long: Vec<usize> = docs
        .iter()
        .enumerate()
        .filter(|(_, d)| d.len() > seqlen)
        .map(|(i, _)| i)
        .collect();
    if long.is_empty() {
        let longest = docs.iter().map(Vec::len).max().unwrap_or(0);
        return Err(Error::format(
            "calibration text",
            source,
            "documents",
            format!(
                "calibration text shorter than one window: {} documents, the longest has \
                 {longest} tokens, and a window needs more than seqlen = {seqlen}",
                docs.len()
            ),
        ));
    }
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n_samples);
    for _ in 0..n_samples {
        let doc = long[rng.below(long.len() as u64) as usize];
        // `long` holds only documents longer than seqlen, so there is at least one start.
        let starts = docs.get(doc).map_or(1, |d| d.len() - seqlen);
        let start = rng.below(starts as u64) as usize;
        out.push(Window { doc, start });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> &'static Path {
        Path::new("corpus.jsonl")
    }

    /// Document `d` holds tokens `d*1000 .. d*1000 + len`, so a window reveals where it came from.
    fn docs(lens: &[usize]) -> Vec<Vec<u32>> {
        lens.iter()
            .enumerate()
            .map(|(d, &n)| (0..n as u32).map(|t| d as u32 * 1000 + t).collect())
            .collect()
    }

    #[test]
    fn windows_are_contiguous_and_from_long_documents() {
        let d = docs(&[5, 40, 8, 25]);
        let pos = sample_window_positions(src(), &d, 200, 8, 0).unwrap();
        let win = sample_windows(src(), &d, 200, 8, 0).unwrap();
        assert_eq!(win.len(), 200);
        for (w, p) in win.iter().zip(&pos) {
            // Documents 0 (5 tokens) and 2 (exactly seqlen) are never long enough.
            assert!(p.doc == 1 || p.doc == 3, "{p:?}");
            assert!(
                p.start + 8 < d[p.doc].len(),
                "window reaches the last token: {p:?}"
            );
            assert_eq!(w, &d[p.doc][p.start..p.start + 8]);
        }
        assert!(pos.iter().any(|p| p.doc == 1) && pos.iter().any(|p| p.doc == 3));
    }

    #[test]
    fn every_start_is_reachable() {
        // One document of seqlen + 3 tokens: starts 0, 1, 2 are possible, 3 is not.
        let d = docs(&[11]);
        let pos = sample_window_positions(src(), &d, 300, 8, 9).unwrap();
        let mut seen = [false; 3];
        for p in &pos {
            seen[p.start] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn deterministic_per_seed() {
        let d = docs(&[50, 60, 70]);
        let a = sample_windows(src(), &d, 16, 10, 7).unwrap();
        assert_eq!(a, sample_windows(src(), &d, 16, 10, 7).unwrap());
        assert_ne!(a, sample_windows(src(), &d, 16, 10, 8).unwrap());
    }

    #[test]
    fn single_stream_works() {
        let d = docs(&[100]);
        let w = sample_windows(src(), &d, 3, 99, 1).unwrap();
        assert_eq!(w, vec![d[0][..99].to_vec(); 3]);
    }

    #[test]
    fn too_short_corpus_names_file_and_lengths() {
        let e = sample_windows(src(), &docs(&[3, 8, 5]), 4, 8, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("corpus.jsonl")
                && e.contains("shorter than one window")
                && e.contains("3 documents")
                && e.contains("longest has 8 tokens")
                && e.contains("seqlen = 8"),
            "{e}"
        );
        assert!(sample_windows(src(), &[], 1, 8, 0).is_err());
    }

    #[test]
    fn fixture_corpus_with_byte_tokens() {
        // Bytes stand in for token ids: tokenisation is not this module's concern.
        let path = crate::data::requests::tests::fixture("c4_en_validation_first94.jsonl");
        let corpus = crate::data::read_text_corpus(&path).unwrap();
        let docs: Vec<Vec<u32>> = corpus
            .documents
            .iter()
            .map(|d| d.bytes().map(u32::from).collect())
            .collect();
        let w = sample_windows(&path, &docs, 16, 2048, 0).unwrap();
        assert!(w.iter().all(|w| w.len() == 2048));
        let e = sample_windows(&path, &docs, 16, 1 << 20, 0).unwrap_err();
        assert!(
            e.to_string().contains("c4_en_validation_first94.jsonl"),
            "{e}"
        );
    }

    #[test]
    fn zero_sizes_are_usage_errors() {
        let d = docs(&[50]);
        assert!(matches!(
            sample_windows(src(), &d, 0, 8, 0),
            Err(Error::Usage { .. })
        ));
        assert!(matches!(
            sample_windows(src(), &d, 1, 0, 0),
            Err(Error::Usage { .. })
        ));
    }
}
