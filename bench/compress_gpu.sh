#!/usr/bin/env bash
# Issue 5, GPU path: each compression method on SmolLM2 with --device gpu and --device cpu on
# the same calibration windows, timed, then WikiText-2 perplexity of both outputs and how many
# linear weights are bit-equal (and zeros shared) between the two. Prints the machine, date,
# commit and adapter first; appends JSON lines to $BENCH_OUT/compress_gpu.jsonl.
# Usage: ROWS="rtn-4-64 gptq-4-64 sparsegpt-50 wanda-50 magnitude-50" N_CALIB=32 SEQLEN=2048 \
#        PPL_WINDOWS=8 THREADS=$(nproc) [PY=python-with-numpy] bench/compress_gpu.sh
# On a software adapter (lavapipe) the GPU times say nothing about speed; small N_CALIB/SEQLEN
# then check the path on the real model in minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
MODEL=${MODEL:-models/smollm2}
C4=${C4:-../shared/data/calibration/c4/c4_en_validation_2k.jsonl}
WT=${WT:-../shared/data/wikitext2}
ROWS=${ROWS:-rtn-4-64 gptq-4-64 sparsegpt-50 wanda-50 magnitude-50}
N_CALIB=${N_CALIB:-32}
SEQLEN=${SEQLEN:-2048}
PPL_WINDOWS=${PPL_WINDOWS:-8}
THREADS=${THREADS:-$(nproc)}
OUT=${BENCH_OUT:-bench/out}/compress_gpu
mkdir -p "$OUT"
cargo build --release --quiet --bin intervene
BIN=$CARGO_TARGET_DIR/release/intervene

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty)"
echo "settings: $N_CALIB x $SEQLEN calibration tokens, $PPL_WINDOWS WikiText-2 windows, $THREADS threads"

ppl() {
  "$BIN" -q eval "$1" --task ppl --data "$WT/wiki.test.raw" --layout "$WT/wiki.test.tokens" \
    --seqlen 2048 --limit "$PPL_WINDOWS" --threads "$THREADS" --no-record --json |
    python3 -c "import json,sys;print(json.load(sys.stdin)['ppl'])"
}
# Share of linear weights bit-equal between two outputs, and of zeros both have.
agree() {
  "${PY:-python3}" - "$1/model.safetensors" "$2/model.safetensors" <<'EOF'
import json, struct, sys
from array import array
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head, base = json.loads(b[8:8 + n]), 8 + n
    out = {}
    for k, v in head.items():
        if k != "__metadata__" and k.endswith("proj.weight"):
            if v["dtype"] != "F32":
                sys.exit(f"{p}: {k} is {v['dtype']}, expected F32")
            s, e = v["data_offsets"]
            out[k] = b[base + s:base + e]
    return out
a, c = load(sys.argv[1]), load(sys.argv[2])
same = tot = zboth = zany = 0
try:
    import numpy as np
except ImportError:
    np = None
for k in a:
    if np is not None:
        x, y = np.frombuffer(a[k], np.float32), np.frombuffer(c[k], np.float32)
        tot += x.size
        same += int((x.view(np.uint32) == y.view(np.uint32)).sum())
        zany += int(((x == 0) | (y == 0)).sum())
        zboth += int(((x == 0) & (y == 0)).sum())
        continue
    for p, q in zip(array("f", a[k]), array("f", c[k])):
        tot += 1
        same += p == q
        if p == 0.0 or q == 0.0:
            zany += 1
            zboth += p == 0.0 and q == 0.0
print(f"{same / tot:.5f} {zboth / max(zany, 1):.5f}")
EOF
}

printf '%-14s %8s %8s %9s %9s %9s %9s  %s\n' row gpu_s cpu_s gpu_ppl cpu_ppl bit_equal zeros_eq adapter
for row in $ROWS; do
  IFS=- read -r method a b <<<"$row"
  calib=(--calib "$C4" --calib-samples "$N_CALIB" --seqlen "$SEQLEN" --seed 0)
  case $method in
    rtn) args=(--bits "$a" --group-size "$b"); calib=() ;;
    gptq) args=(--bits "$a" --group-size "$b" --act-order) ;;
    magnitude) args=(--sparsity "0.$a"); calib=() ;;
    sparsegpt | wanda) args=(--sparsity "0.$a") ;;
    *) echo "unknown row $row (awq has no GPU path)" >&2; exit 2 ;;
  esac
  declare -A secs p
  for dev in gpu cpu; do
    dir=$OUT/$row-$dev
    rm -rf "$dir"
    start=$(date +%s.%N)
    "$BIN" -q --device "$dev" --threads "$THREADS" "$method" "$MODEL" -o "$dir" "${calib[@]}" \
      "${args[@]}" >/dev/null
    secs[$dev]=$(python3 -c "import time;print(f'{time.time()-$start:.1f}')")
    p[$dev]=$(ppl "$dir")
  done
  adapter=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['chain'][-1]['device'])" \
    "$OUT/$row-gpu/provenance.json")
  read -r eq zeq < <(agree "$OUT/$row-gpu" "$OUT/$row-cpu")
  printf '%-14s %8s %8s %9.3f %9.3f %9s %9s  %s\n' "$row" "${secs[gpu]}" "${secs[cpu]}" \
    "${p[gpu]}" "${p[cpu]}" "$eq" "$zeq" "$adapter"
  echo "{\"row\":\"$row\",\"n_calib\":$N_CALIB,\"seqlen\":$SEQLEN,\"ppl_windows\":$PPL_WINDOWS,\"gpu_s\":${secs[gpu]},\"cpu_s\":${secs[cpu]},\"gpu_ppl\":${p[gpu]},\"cpu_ppl\":${p[cpu]},\"bit_equal\":$eq,\"zeros_agree\":$zeq,\"adapter\":\"$adapter\"}" >>"$OUT/compress_gpu.jsonl"
  rm -rf "$OUT/$row-gpu" "$OUT/$row-cpu"
done
