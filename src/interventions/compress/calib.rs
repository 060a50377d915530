//! The calibration batch of a compression run: the corpus tokenised with the checkpoint's
//! tokenizer, `samples` windows of `seqlen` tokens drawn with the seed (`data::calib`) from
//! single documents or, with `packed`, from all documents joined into one stream, and what
//! provenance records about them (file hash, window positions, a hash of the token ids).

use serde_json::{json, Value};

use super::plan::CalibParams;
use crate::checkpoint::hash_file;
use crate::data::calib::{sample_window_positions, Window};
use crate::data::read_text_corpus;
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// The sampled windows and their record.
#[derive(Clone, Debug)]
pub struct CalibBatch {
    pub windows: Vec<Vec<u32>>,
    pub positions: Vec<Window>,
    pub file_hash: String,
    /// blake3 over the little-endian token ids of every window, in order.
    pub tokens_hash: String,
    pub documents: usize,
    /// Positions index the joined stream (document 0) rather than the documents.
    pub packed: bool,
}

impl CalibBatch {
    /// Tokenises the corpus (special tokens as the tokenizer adds them, as GPTQ's loader does)
    /// and samples the windows.
    pub fn prepare(params: &CalibParams, tokenizer: &Tokenizer) -> Result<Self> {
        let corpus = read_text_corpus(&params.file)?;
        let mut docs: Vec<Vec<u32>> = corpus
            .documents
            .iter()
            .map(|d| tokenizer.encode(d, true))
            .collect::<Result<_>>()?;
        let documents = docs.len();
        if params.packed {
            // One stream in file order, each document as the tokenizer encodes it on its own.
            docs = vec![docs.concat()];
        }
        let positions = sample_window_positions(
            &params.file,
            &docs,
            params.samples,
            params.seqlen,
            params.seed,
        )?;
        let windows: Vec<Vec<u32>> = positions
            .iter()
            .map(|w| docs[w.doc][w.start..w.start + params.seqlen].to_vec())
            .collect();
        let mut h = blake3::Hasher::new();
        for w in &windows {
            for t in w {
                h.update(&t.to_le_bytes());
            }
        }
        Ok(CalibBatch {
            windows,
            positions,
            file_hash: hash_file(&params.file)?,
            tokens_hash: format!("blake3:{}", h.finalize().to_hex()),
            documents,
            packed: params.packed,
        })
    }

    /// The provenance report entry.
    pub fn report(&self) -> Value {
        let mut r = json!({
            "file_blake3": self.file_hash,
            "documents": self.documents,
            "windows": self.windows.len(),
            "tokens_blake3": self.tokens_hash,
            "positions": self.positions.iter().map(|w| [w.doc, w.start]).collect::<Vec<_>>(),
        });
        // Only when set, so the records (and ids) of unpacked runs keep their earlier form.
        if self.packed {
            r["packed"] = json!(true);
        }
        r
    }
}
