#!/usr/bin/env bash
# One training step on SmolLM2 (batch 4 x 256 tokens, upper 15 layers trainable), ours and
# PyTorch's on the CPU, in one run; prints both lines plus the machine facts for RESULTS.md.
# Usage: bench/train_step.sh [model dir] (default models/smollm2; needs /opt/pyref).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-models/smollm2}"
B=4 T=256 UPPER=15
cargo build --release --example train_step >/dev/null
BIN="${CARGO_TARGET_DIR:-target}/release/examples/train_step"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit: $(git rev-parse --short HEAD), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" "$MODEL" $B $T $UPPER
/opt/pyref/bin/python bench/train_step.py "$MODEL" $B $T $UPPER
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
