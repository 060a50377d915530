//! provenance.json parsing, verify's checks, and the write/read round trip.
//! Body: `harness::provenance` (shared with tests/fuzz_regressions.rs).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::provenance(data));
