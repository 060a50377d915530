#!/usr/bin/env bash
# The editing subcommands' time on SmolLM2 beside the same computation in PyTorch on the CPU
# (bench/edit_torch.py), in one run (issue 7): MEMIT on N requests with the covariance computed
# (empty cache) and then cached, ROME on N_ROME requests one after another, FT and LoRA on N
# requests. Each method runs ours first, then PyTorch with ours' templates and iteration counts
# (edit_torch.py reads ours' --json report), so both do the same work; both with THREADS threads.
#
# Wall time is each process's whole run (start-up, model load, save included), from GNU time;
# CPU time (user+sys) beside it. The agreement columns say the two computed the same thing:
# MEMIT's final ||Z - H||, ROME's and FT/LoRA's final losses.
#
#   bench/edit_speed.sh                          # N=50 N_ROME=3 THREADS=$(nproc)
#   N=10 METHODS="memit ft" bench/edit_speed.sh
#
# Requirements: a built `intervene` (BIN), models/smollm2, /opt/pyref/bin/python with torch,
# transformers, tokenizers, safetensors and peft (PY), GNU time (/usr/bin/time).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/smollm2}
DATA=${DATA:-../shared/data}
REQ=${REQ:-$DATA/knowledge_editing/zsre_mend_train_800.jsonl}
CORPUS=${CORPUS:-data/calibration/wikitext103/wt103_raw_train_rows1000-1999.txt}
SAMPLES=${SAMPLES:-100}
SEQLEN=${SEQLEN:-256}
N=${N:-50}
N_ROME=${N_ROME:-3}
THREADS=${THREADS:-$(nproc)}
METHODS=${METHODS:-memit rome ft lora}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/intervene}
PY=${PY:-/opt/pyref/bin/python}

[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release, or set BIN)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time" >&2; exit 2; }
OUT=$(mktemp -d /tmp/edit-speed.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
cp "$BIN" "$OUT/intervene" # a rebuild of target/ mid-run must not change the binary
ROWS="$OUT/rows.jsonl"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted changes under src/')"
echo "threads: $THREADS, N: $N, N_ROME: $N_ROME, covariance: $SAMPLES x $SEQLEN tokens of $CORPUS"
echo "torch: $("$PY" -c 'import torch, transformers; print(torch.__version__, "transformers", transformers.__version__)')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

stats=(--stats-corpus "$CORPUS" --stats-samples "$SAMPLES" --stats-seqlen "$SEQLEN")

# timed NAME SIDE CMD... : runs CMD with stdout to $OUT/NAME.SIDE.json, appends wall and CPU.
timed() {
  local name=$1 side=$2
  shift 2
  /usr/bin/time -f '%e %U %S' -o "$OUT/time" "$@" >"$OUT/$name.$side.json"
  read -r wall user sys <"$OUT/time"
  python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "side": sys.argv[2], "wall": float(sys.argv[3]), "cpu": float(sys.argv[4]) + float(sys.argv[5])}))' \
    "$name" "$side" "$wall" "$user" "$sys" >>"$ROWS"
  echo "  $name $side: wall $wall s, cpu $(python3 -c "print(round($user + $sys, 1))") s" >&2
}

ours() { # NAME METHOD N ARGS...
  local name=$1 m=$2 n=$3
  shift 3
  timed "$name" ours "$OUT/intervene" -q --threads "$THREADS" "$m" "$MODEL" -o "$OUT/ckpt-$name" \
    --force --requests "$REQ" --limit "$n" "$@" --json
}

torch() { # NAME METHOD N ARGS...
  local name=$1 m=$2 n=$3
  shift 3
  timed "$name" torch "$PY" bench/edit_torch.py "$m" "$MODEL" --requests "$REQ" --limit "$n" \
    --ours "$OUT/$name.ours.json" --threads "$THREADS" --out "$OUT/torch-$name" "$@"
}

for m in $METHODS; do
  case $m in
    memit)
      # Separate caches: each side computes its own covariance once, then reuses it.
      for run in cold cached; do
        ours "memit-$run" memit "$N" --layers 4-8 "${stats[@]}" --cache-dir "$OUT/cache-ours"
        torch "memit-$run" memit "$N" "${stats[@]}" --cache-dir "$OUT/cache-torch"
      done
      ;;
    rome)
      # Each side's layer-5 covariance computed first (one request, one value step); then one
      # request and N_ROME requests: the difference over N_ROME - 1 is the time per request.
      for n in 0 1 "$N_ROME"; do
        steps=(); [ "$n" = 0 ] && steps=(--steps 1)
        ours "rome-$n" rome "$(( n > 0 ? n : 1 ))" --layer 5 "${steps[@]}" "${stats[@]}" --cache-dir "$OUT/cache-rome-ours"
        torch "rome-$n" rome "$(( n > 0 ? n : 1 ))" "${stats[@]}" --cache-dir "$OUT/cache-rome-torch"
      done
      ;;
    ft)
      ours ft ft "$N" --layers 4-8 --loss target
      torch ft ft "$N"
      ;;
    lora)
      ours lora lora "$N"
      torch lora lora "$N"
      ;;
    *) echo "unknown method $m" >&2; exit 2 ;;
  esac
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" "$ROWS" "$N_ROME" <<'PY'
import json, sys
out, rows_path, n_rome = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(rows_path)]
t = {(r["name"], r["side"]): r for r in rows}

def rep(name, side):
    return json.load(open(f"{out}/{name}.{side}.json"))

def agree(name):
    o, p = rep(name, "ours"), rep(name, "torch")
    if name.startswith("memit"):
        return "final norm(Z - H) %.4f vs %.4f" % (o["report"]["method"]["final_residual_norm"],
                                            p["report"]["final_residual_norm"])
    if name.startswith("rome"):
        a = [r["value"]["losses"][-1]["total"] for r in o["report"]["method"]["requests"]]
        b = [r["value_final_loss"] for r in p["report"]["requests"]]
        return "value losses " + ", ".join("%.4f/%.4f" % x for x in zip(a, b))
    return "final loss %.4f vs %.4f (%d epochs)" % (o["report"]["final_loss"], p["report"]["final_loss"],
                                                   p["report"]["epochs"])

print()
print("| run | ours wall s | PyTorch wall s | PyTorch / ours | ours CPU s | PyTorch CPU s | agreement (ours vs PyTorch) |")
print("|---|---:|---:|---:|---:|---:|---|")
for name in dict.fromkeys(r["name"] for r in rows):
    if (name, "torch") not in t:
        continue
    o, p = t[(name, "ours")], t[(name, "torch")]
    print("| %s | %.1f | %.1f | %.2f | %.1f | %.1f | %s |" % (
        name, o["wall"], p["wall"], p["wall"] / o["wall"], o["cpu"], p["cpu"], agree(name)))
rome1, romen = "rome-1", "rome-%d" % n_rome
if n_rome > 1 and all((x, y) in t for x in (rome1, romen) for y in ("ours", "torch")):
    per = {y: (t[(romen, y)]["wall"] - t[(rome1, y)]["wall"]) / (n_rome - 1) for y in ("ours", "torch")}
    print()
    print("ROME per request (wall of %d requests less wall of 1, over %d): ours %.1f s, PyTorch %.1f s, PyTorch / ours %.2f"
          % (n_rome, n_rome - 1, per["ours"], per["torch"], per["torch"] / per["ours"]))
PY
