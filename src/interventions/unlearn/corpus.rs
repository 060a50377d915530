//! Forget and retain corpora for unlearning: read (plain text, JSONL with `text`, TOFU's
//! `question` + `answer` records joined as `"question answer"`; see `data::text`), tokenised
//! with the model's tokenizer, truncated on the right to `max_len` tokens (RMU forces right
//! truncation), and cut into consecutive batches as the references do. Batches are packed
//! without padding by the trainer, so no pad token is ever scored (the study's GA scores its
//! left padding; TOFU masks it; we follow TOFU).

use std::path::{Path, PathBuf};

use crate::checkpoint::{hash_file, InputFile};
use crate::data::read_text_corpus;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// A tokenised corpus: one token sequence per document, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenCorpus {
    /// The flag it came from (`--forget`, `--retain`), for error messages and provenance.
    pub role: String,
    pub path: PathBuf,
    pub docs: Vec<Vec<u32>>,
}

impl TokenCorpus {
    /// Reads and tokenises `path`. Documents with fewer than `min_tokens` tokens after
    /// truncation are dropped (a next-token loss needs 2); a corpus left empty is an input
    /// error naming the flag and the file.
    pub fn load(
        role: &str,
        path: &Path,
        tok: &Tokenizer,
        max_len: usize,
        min_tokens: usize,
    ) -> Result<TokenCorpus> {
        let corpus = read_text_corpus(path)?;
        let mut docs = Vec::new();
        for text in &corpus.documents {
            if text.trim().is_empty() {
                continue;
            }
            let mut ids = tok.encode(text, true)?;
            ids.truncate(max_len);
            if ids.len() >= min_tokens.max(1) {
                docs.push(ids);
            }
        }
        TokenCorpus::from_docs(role, path, docs).map_err(|_| {
            Error::usage(
                role,
                format!(
                    "`{}`: no document with at least {} tokens (of {} read)",
                    path.display(),
                    min_tokens.max(1),
                    corpus.documents.len()
                ),
            )
        })
    }

    /// A corpus of given token ids (tests, and callers that tokenise themselves).
    pub fn from_docs(role: &str, path: &Path, docs: Vec<Vec<u32>>) -> Result<TokenCorpus> {
        if docs.iter().all(|d| d.is_empty()) {
            return Err(Error::usage(
                role,
                format!("`{}`: no documents", path.display()),
            ));
        }
        Ok(TokenCorpus {
            role: role.to_string(),
            path: path.to_path_buf(),
            docs: docs.into_iter().filter(|d| !d.is_empty()).collect(),
        })
    }

    /// Number of batches of `batch_size` consecutive documents (the last may be short).
    pub fn n_batches(&self, batch_size: usize) -> usize {
        self.docs.len().div_ceil(batch_size.max(1))
    }

    /// Batch `i` (wrapping around the corpus: a run with more steps than batches starts a new
    /// epoch), as consecutive documents.
    pub fn batch(&self, i: usize, batch_size: usize) -> &[Vec<u32>] {
        let bs = batch_size.max(1);
        let b = i % self.n_batches(bs);
        let end = ((b + 1) * bs).min(self.docs.len());
        &self.docs[b * bs..end]
    }

    /// Tokens in the whole corpus.
    pub fn tokens(&self) -> usize {
        self.docs.iter().map(Vec::len).sum()
    }

    /// The provenance entry: role, path as given, content hash.
    pub fn input_file(&self) -> Result<InputFile> {
        Ok(InputFile {
            role: self.role.trim_start_matches('-').to_string(),
            path: self.path.display().to_string(),
            blake3: hash_file(&self.path)?,
        })
    }
}

/// Which forget and retain batch step `t` uses: several forget corpora alternate (RMU's bio
/// and cyber: step t takes topic `t mod K` and batch `t div K`); retain corpora alternate the
/// same way with the same batch index, as the reference pairs retain batch i with both topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepBatches {
    pub forget: usize,
    pub retain: usize,
    pub batch: usize,
}

pub fn step_batches(t: usize, n_forget: usize, n_retain: usize) -> StepBatches {
    let k = n_forget.max(1);
    StepBatches {
        forget: t % k,
        retain: t % n_retain.max(1),
        batch: t / k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_consecutive_and_wrap() {
        let c = TokenCorpus::from_docs(
            "--forget",
            Path::new("x"),
            vec![vec![1, 2], vec![3], vec![4, 5, 6], vec![7, 8], vec![9]],
        )
        .unwrap();
        assert_eq!(c.n_batches(2), 3);
        assert_eq!(c.batch(0, 2), &[vec![1, 2], vec![3]]);
        assert_eq!(c.batch(2, 2), &[vec![9]]);
        assert_eq!(c.batch(3, 2), c.batch(0, 2));
        assert_eq!(c.tokens(), 9); // 2 + 1 + 3 + 2 + 1
        assert!(TokenCorpus::from_docs("--forget", Path::new("x"), vec![vec![]]).is_err());
    }

    #[test]
    fn topics_alternate_with_a_shared_batch_index() {
        let s: Vec<_> = (0..5).map(|t| step_batches(t, 2, 1)).collect();
        assert_eq!(
            s.iter().map(|b| (b.forget, b.batch)).collect::<Vec<_>>(),
            [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
        );
        assert!(s.iter().all(|b| b.retain == 0));
        assert_eq!(step_batches(3, 2, 2).retain, 1);
    }
}
