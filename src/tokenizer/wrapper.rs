//! [`Tokenizer`]: a `tokenizers::Tokenizer` with our error type and the file it came from, plus
//! the EOS id that `tokenizer.json` itself does not record.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

/// A loaded Hugging Face tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

impl Tokenizer {
    /// Load `tokenizer.json`. The EOS id comes from a `tokenizer_config.json` beside it, when
    /// there is one, because that is where transformers keeps it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let inner: tokenizers::Tokenizer = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format("tokenizer", path, "tokenizer.json", e.to_string()))?;
        let mut tokenizer = Self::new(inner, path);
        let config = path.with_file_name("tokenizer_config.json");
        if config.is_file() {
            tokenizer.eos_id = eos_from_config(&tokenizer, &config)?;
        }
        Ok(tokenizer)
    }

    /// Build from an in-memory `tokenizer.json` document; `source` names it in errors.
    pub fn from_json_value(value: &Value, source: impl AsRef<Path>) -> Result<Self> {
        let source = source.as_ref();
        let inner: tokenizers::Tokenizer = serde_json::from_value(value.clone())
            .map_err(|e| Error::format("tokenizer", source, "tokenizer.json", e.to_string()))?;
        Ok(Self::new(inner, source))
    }

    fn new(inner: tokenizers::Tokenizer, source: &Path) -> Self {
        Tokenizer {
            inner,
            source: source.to_path_buf(),
            eos_id: None,
        }
    }

    /// Set the EOS id (e.g. from GGUF's `tokenizer.ggml.eos_token_id`).
    pub fn with_eos_id(mut self, eos_id: Option<u32>) -> Self {
        self.eos_id = eos_id;
        self
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (BOS/EOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::format("tokenizer", &self.source, "encode", e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`. An id outside the vocabulary is an error, not silently dropped.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let size = self.vocab_size();
        if let Some((i, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| self.inner.id_to_token(id).is_none())
        {
            let msg = format!("id {id} at position {i} is not in the vocabulary of {size} tokens");
            return Err(Error::usage("token ids", msg));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::format("tokenizer", &self.source, "decode", e.to_string()))
    }

    /// The number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The end-of-sequence id, when known (see [`Tokenizer::from_file`], [`Tokenizer::with_eos_id`]).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The underlying `tokenizers` tokenizer, for what this wrapper does not cover.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// `eos_token` of a `tokenizer_config.json` (a string, or an object with `content`), as an id.
fn eos_from_config(tokenizer: &Tokenizer, config: &Path) -> Result<Option<u32>> {
    let bytes = std::fs::read(config).map_err(|e| Error::io("read", config, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::format(
            "tokenizer config",
            config,
            "tokenizer_config.json",
            e.to_string(),
        )
    })?;
    let eos = match &value["eos_token"] {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    };
    Ok(eos.and_then(|t| tokenizer.token_to_id(t)))
}
