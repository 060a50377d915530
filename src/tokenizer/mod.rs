//! Tokenizers: loading `tokenizer.json` through the `tokenizers` crate, and building one from
//! a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! A GGUF carries no `tokenizer.json`, only the vocabulary, merges, token types and special ids
//! as llama.cpp wrote them. [`tokenizer_json_from_gguf`] turns those into the document the
//! `tokenizers` crate and transformers' `PreTrainedTokenizerFast` load, so an imported checkpoint
//! tokenizes as llama.cpp did. The GGUF reader fills a [`GgufVocab`]; nothing here reads files
//! except [`Tokenizer::from_file`].

mod byte_level;
mod config;
mod from_gguf;
mod merges;
mod pretokenizers;
mod to_gguf;
mod validate;
mod wrapper;

#[cfg(test)]
mod tests;

pub use config::{generation_config, tokenizer_config_from_gguf};
pub use from_gguf::tokenizer_json_from_gguf;
pub use to_gguf::{gguf_vocab_from_dir, gguf_vocab_from_json, SpecialIds};
pub use wrapper::Tokenizer;

use serde::{Deserialize, Serialize};

/// `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The tokenizer fields of a GGUF file, as plain data. Field comments give the GGUF key.
///
/// Empty `token_types` means every token is normal; empty `scores` means the file has none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE), "llama" (SentencePiece BPE), ...
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name, for byte-level BPE.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: see [`token_type`].
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores`
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.merges`: "left right", best first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`
    pub chat_template: Option<String>,
}

impl GgufVocab {
    /// The type of token `id`; normal when the file lists no types.
    pub fn token_type(&self, id: usize) -> i32 {
        self.token_types
            .get(id)
            .copied()
            .unwrap_or(token_type::NORMAL)
    }

    /// The text of token `id`, if in range.
    pub fn token(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|i| self.tokens.get(i as usize))
            .map(String::as_str)
    }

    /// Whether the tokenizer adds BOS: the file's flag, else llama.cpp's default for this
    /// vocabulary (SentencePiece: yes; byte-level: per pre-tokenizer). Never without a BOS id.
    pub fn adds_bos(&self) -> bool {
        let default = match self.model.as_str() {
            "llama" => true,
            _ => pretokenizers::lookup(self.pre.as_deref()).is_some_and(|p| p.add_bos_default),
        };
        self.bos_id.is_some() && self.add_bos.unwrap_or(default)
    }

    /// Whether the tokenizer adds EOS: the file's flag, else no. Never without an EOS id.
    pub fn adds_eos(&self) -> bool {
        self.eos_id.is_some() && self.add_eos.unwrap_or(false)
    }
}
