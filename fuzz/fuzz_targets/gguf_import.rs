//! The whole GGUF import (metadata, vocabulary, name mapping, dequantisation, writing).
//! Body: `harness::gguf_import` (shared with tests/fuzz_regressions.rs).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::gguf_import(data));
