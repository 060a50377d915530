#!/usr/bin/env bash
# FT and LoRA editing on SmolLM2 over the first N zsRE requests (issue 7), then
# `eval --task edit` on the same requests and WikiText-2 perplexity on a small slice, for the
# unedited model and both edits. Prints the machine facts and every command's output for
# bench/RESULTS.md. Usage: N=10 bench/edit_ft.sh [model dir] (default models/smollm2); BIN=path
# skips the build.
# FT runs with the composable-interventions study's settings (layers 4-8, target_new loss,
# lr 5e-5, 25 steps, all requests in one batch); LoRA with the issue's defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-models/smollm2}"
N="${N:-50}"
DATA="${DATA:-/work/shared/data}"
ZSRE="$DATA/knowledge_editing/zsre_mend_train_800.jsonl"
WIKI="$DATA/wikitext2/wiki.test.raw"
OUT="${OUT:-$(mktemp -d)}"
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin intervene >/dev/null
  BIN="${CARGO_TARGET_DIR:-target}/release/intervene"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit: $(git rev-parse --short HEAD), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
run() { echo "\$ $*"; /usr/bin/time -f "wall %e s, max RSS %M KiB" "$@"; }
run "$BIN" ft "$MODEL" -o "$OUT/ft" --requests "$ZSRE" --limit "$N" --layers 4-8 --loss target --force --json
run "$BIN" lora "$MODEL" -o "$OUT/lora" --requests "$ZSRE" --limit "$N" --force --json
for d in "$MODEL" "$OUT/ft" "$OUT/lora"; do
  run "$BIN" eval "$d" --task edit --data "$ZSRE" --limit "$N" --no-record -q
  run "$BIN" eval "$d" --task ppl --data "$WIKI" --seqlen 512 --limit 4 --no-record -q
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
