#!/usr/bin/env bash
# ROME and MEMIT timings on SmolLM2 (issue 7): MEMIT on N_MEMIT requests with the covariance
# computed (empty cache) and then cached, and ROME per request (N_ROME requests, sequential,
# covariance cached by the first MEMIT run when the layer is one of MEMIT's).
#
#   bench/edit_rome.sh          # defaults below; env vars override
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/smollm2}
DATA=${DATA:-/work/shared/data}
REQ=${REQ:-$DATA/knowledge_editing/zsre_mend_train_800.jsonl}
CORPUS=${CORPUS:-$DATA/calibration/wikitext103/wt103_raw_train_rows1000-1999.txt}
SAMPLES=${SAMPLES:-100}
SEQLEN=${SEQLEN:-256}
N_MEMIT=${N_MEMIT:-10}
N_ROME=${N_ROME:-2}
THREADS=${THREADS:-$(nproc)}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/intervene}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

[ -x "$BIN" ] || cargo build --release >&2
stats=(--stats-corpus "$CORPUS" --stats-samples "$SAMPLES" --stats-seqlen "$SEQLEN" --cache-dir "$OUT/cache")

secs() { python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["seconds"])'; }
echo "machine: $(nproc) cores, load $(uptime | sed 's/.*load average: //'), commit $(git rev-parse --short HEAD)"
echo "memit, $N_MEMIT requests, covariance computed ($SAMPLES x $SEQLEN tokens): $("$BIN" --threads "$THREADS" -q memit "$MODEL" -o "$OUT/m1" --requests "$REQ" --limit "$N_MEMIT" "${stats[@]}" --json | secs) s"
echo "memit, $N_MEMIT requests, covariance cached: $("$BIN" --threads "$THREADS" -q memit "$MODEL" -o "$OUT/m2" --requests "$REQ" --limit "$N_MEMIT" "${stats[@]}" --json | secs) s"
t=$("$BIN" --threads "$THREADS" -q rome "$MODEL" -o "$OUT/r" --requests "$REQ" --limit "$N_ROME" "${stats[@]}" --json | secs)
echo "rome, $N_ROME requests (layer-5 covariance cached): $t s, $(python3 -c "print('%.1f' % ($t / $N_ROME))") s per request"
