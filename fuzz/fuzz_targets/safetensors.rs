//! The safetensors header parser; every accepted tensor converts to f32.
//! Body: `harness::safetensors` (shared with tests/fuzz_regressions.rs).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::safetensors(data));
