//! Multiple choice: MMLU CSV (subject from the file name) and WMDP JSON Lines.
//! Body: `harness::mc` (shared with tests/fuzz_regressions.rs).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::mc(data));
