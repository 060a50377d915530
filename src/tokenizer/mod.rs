//! Tokenizers: loading `tokenizer.json` through the `tokenizers` crate, and building one from
//! a GGUF file's `tokenizer.ggml.*` metadata.
