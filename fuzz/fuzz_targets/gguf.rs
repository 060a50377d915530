//! The GGUF container parser; every accepted tensor (up to a size) dequantises.
//! Body: `harness::gguf` (shared with tests/fuzz_regressions.rs).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::gguf(data));
