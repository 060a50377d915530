#!/usr/bin/env bash
# The product kernel alone, ours (examples/gemm_bench.rs, the `gemm` crate through
# backend::cpu::matmul::linear) against PyTorch's (bench/gemm_bench.py), on the shapes of the
# training step; ROUNDS alternating runs of each under `chrt -f 50` (root; drops it
# otherwise), then the per-shape median GFLOP/s of each side and their ratio.
# Usage: THREADS=2 ROUNDS=5 bench/gemm_bench.sh   (needs /opt/pyref or PYREF=...)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} ROUNDS=${ROUNDS:-5} PYREF=${PYREF:-/opt/pyref}
cargo build --release --quiet --example gemm_bench
BIN=${CARGO_TARGET_DIR:-target}/release/examples/gemm_bench
RT=(chrt -f 50); "${RT[@]}" true 2>/dev/null || RT=()
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git rev-parse --short HEAD); threads: $THREADS"
for _ in $(seq "$ROUNDS"); do
  "${RT[@]}" "$BIN" "$THREADS" 9
  "$BIN" shapes | "${RT[@]}" "$PYREF/bin/python" bench/gemm_bench.py "$THREADS" 9
done | python3 -c '
import sys, statistics as st
runs = {}
for line in sys.stdin:
    side, name, m, k, n, secs, _, gf, _ = line.split()
    runs.setdefault((name, m, k, n), {}).setdefault(side, []).append(float(gf))
print("{:<11} {:>5} {:>5} {:>6} {:>10} {:>10} {:>10}".format("shape", "M", "K", "N", "ours GF/s", "torch GF/s", "ours/torch"))
for (name, m, k, n), s in runs.items():
    o, t = st.median(s["ours"]), st.median(s["torch"])
    print(f"{name:<11} {m:>5} {k:>5} {n:>6} {o:10.1f} {t:10.1f} {o / t:10.2f}")
'
