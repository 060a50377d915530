//! Text corpora: JSON Lines with a `text` field, plain text, and WikiText row splitting.
//! Body: `harness::text` (shared with tests/fuzz_regressions.rs).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::text(data));
