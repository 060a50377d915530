#!/usr/bin/env bash
# Foundation benchmarks (issue 2, "Speed" and "Round trip"): builds release, runs intervene's
# forward bench, llama.cpp and PyTorch on the same f32 weights, times the import of the default
# GGUF, runs the transformers round trip, and appends a "Foundation (issue 2)" section to
# bench/RESULTS.md. Timings are wall-clock on a shared machine: the load average is recorded
# next to them.
#
# Usage: bench/foundation.sh   (env: PY=/opt/pyref/bin/python THREADS=2 REPEATS=7 DECODE_TOKENS=64
#                                     CARGO_TARGET_DIR GGUF CKPT)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/opt/pyref/bin/python}
THREADS=${THREADS:-2}
# Fewer repeats / decode tokens when the machine is too loaded for the full run to finish.
REPEATS=${REPEATS:-7}
DECODE_TOKENS=${DECODE_TOKENS:-64}
COMMON=(--threads "$THREADS" --repeats "$REPEATS" --decode-tokens "$DECODE_TOKENS")
GGUF=${GGUF:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
CKPT=${CKPT:-models/smollm2}
TARGET=${CARGO_TARGET_DIR:-target}
BIN="$TARGET/release/intervene"
# The raw JSON outputs stay in OUT_DIR (a fresh temp dir unless given) for a closer look.
OUT=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT"
echo "raw outputs in $OUT" >&2

cargo build --release --bin intervene --example bench_forward
echo "== intervene bench_forward" >&2
"$TARGET/release/examples/bench_forward" "$CKPT" "${COMMON[@]}" > "$OUT/ours.json"
echo "== llama.cpp" >&2
"$PY" bench/llamacpp_bench.py --ckpt "$CKPT" --orig-gguf "$GGUF" "${COMMON[@]}" \
    --intervene "$BIN" > "$OUT/llamacpp.json" || echo "llama.cpp bench: greedy check failed" >&2
echo "== PyTorch" >&2
"$PY" bench/torch_bench.py --ckpt "$CKPT" "${COMMON[@]}" > "$OUT/torch.json"
echo "== import" >&2
/usr/bin/time -v "$BIN" import "$GGUF" -o "$OUT/imported" -q 2> "$OUT/import_time.txt" >/dev/null
du -b "$OUT/imported/model.safetensors" | cut -f1 > "$OUT/f32_bytes.txt"
rm -rf "$OUT/imported"
echo "== round trip" >&2
set +e
"$PY" scripts/roundtrip_transformers.py "$CKPT" "$BIN" > "$OUT/roundtrip.txt" 2>&1
echo $? > "$OUT/roundtrip_rc.txt"
set -e
"$PY" bench/report.py "$OUT" > "$OUT/section.md"
[ -f bench/RESULTS.md ] || echo "# intervene benchmark results" > bench/RESULTS.md
cat "$OUT/section.md" >> bench/RESULTS.md
cat "$OUT/section.md"
