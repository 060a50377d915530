#!/usr/bin/env bash
# The test suite: unit tests, golden-value tests on committed fixtures, and CLI integration
# tests that run the real binary. Release mode, because numeric tests on real shapes are slow
# in debug. Tests that need the default model run when models/smollm2 exists (scripts/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release "$@"
