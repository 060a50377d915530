//! Edit requests (zsRE, CounterFact, ROME; JSON Lines or an array) and ROME known facts.
//! Body: `harness::requests` (shared with tests/fuzz_regressions.rs).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::requests(data));
