#!/usr/bin/env bash
# Time per optimisation step of `intervene rmu` and `intervene gd` on SmolLM2 beside the same
# computation in PyTorch on the CPU (bench/unlearn_torch.py), in one run (issue 8). The two
# sides alternate (ours, torch, ours, torch, ...) REPS times per method, with THREADS threads
# each, so a change in machine load hits both.
#
# Ours has no per-step timer: its step time is (run with N2 steps - run with N1 steps) / (N2 -
# N1), from the report's "seconds" (wall) and from GNU time's user+sys (CPU). RMU's N1 is at
# least the number of retain batches (50 here), so both runs precompute the frozen states of
# the same batches and that precompute cancels out of the difference.
#
# CPU time is reported beside wall time: under `nice -n 19` on a machine whose cores are busy
# with normal-priority jobs, a run waits for a core most of the time and its wall time says
# nothing about the step; with THREADS=1 its CPU time still does.
#
#   nice -n 19 env THREADS=1 REPS=3 bench/unlearn_speed.sh
#
# Requirements: a built `intervene` (BIN, default target/release/intervene), models/smollm2,
# /opt/pyref/bin/python with torch and transformers (PY), GNU time (/usr/bin/time).
set -euo pipefail
shopt -s inherit_errexit # a failed run inside $(...) stops the script too
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/smollm2}
FACTS=${FACTS:-data/facts}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/intervene}
PY=${PY:-/opt/pyref/bin/python}
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
RMU_N1=${RMU_N1:-50}
RMU_N2=${RMU_N2:-80}
GD_N1=${GD_N1:-2}
GD_N2=${GD_N2:-12}
METHODS=${METHODS:-rmu gd}
BATCH=${BATCH:-4}
MAXLEN=${MAXLEN:-32}
# RMU_SET overrides the RMU settings, e.g. the facts benchmark's (README):
#   BATCH=8 MAXLEN=64 RMU_SET="--layer 7 --lr 1e-2 --alpha 150 --steering-scale 5 --skip-first 1"
read -ra RMU_ARGS <<<"${RMU_SET:---layer 7 --lr 2e-2 --alpha 10 --steering-scale 2 --skip-first 1}"
COMMON=(--forget "$FACTS/forget_text.jsonl" --retain "$FACTS/retain_text.jsonl" --max-len "$MAXLEN" --batch-size "$BATCH")
GD_ARGS=(--lr 1e-5)

[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release, or set BIN)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time" >&2; exit 2; }
# Checkpoints go to memory where there is some: writing a 540 MB checkpoint to disk takes a
# varying second or more, which the difference of two runs does not cancel.
SCRATCH=${SCRATCH:-$([ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo /tmp)}
OUT=$(mktemp -d "$SCRATCH/unlearn-speed.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
# A private copy: a rebuild of target/ during the run must not change the binary mid-run.
cp "$BIN" "$OUT/intervene"
RESULTS="$OUT/results.jsonl"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), nice $(nice)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted changes under src/'), binary: $BIN ($(date -u -r "$BIN" +%H:%M:%SZ))"
echo "threads: $THREADS, reps: $REPS, rmu steps $RMU_N1 vs $RMU_N2, gd steps $GD_N1 vs $GD_N2, batch $BATCH, max-len $MAXLEN"
echo "rmu settings: ${RMU_ARGS[*]}"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Someone regenerating data/facts mid-run would make the N1 and N2 runs read different batches.
data_sum() { sha256sum "$FACTS/forget_text.jsonl" "$FACTS/retain_text.jsonl" | cut -c1-12 | tr '\n' ' '; }
SUM0=$(data_sum)
echo "data sha256: $SUM0"

ours() { # method steps method-args... -> prints "wall_s cpu_s report.json"
  local m=$1 n=$2
  shift 2
  /usr/bin/time -f '%U %S' -o "$OUT/time" "$OUT/intervene" -q --threads "$THREADS" "$m" "$MODEL" \
    -o "$OUT/ckpt-$m" --force "${COMMON[@]}" "$@" --steps "$n" --json >"$OUT/$m-$n.json"
  echo "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$OUT/$m-$n.json") $(awk '{print $1 + $2}' "$OUT/time") $OUT/$m-$n.json"
}

for m in $METHODS; do
  case $m in
    rmu) n1=$RMU_N1 n2=$RMU_N2 targs=("${RMU_ARGS[@]}") ;;
    gd) n1=$GD_N1 n2=$GD_N2 targs=("${GD_ARGS[@]}") ;;
    *) echo "unknown method $m" >&2; exit 2 ;;
  esac
  for rep in $(seq 1 "$REPS"); do
    r1=$(ours "$m" "$n1" "${targs[@]}")
    r2=$(ours "$m" "$n2" "${targs[@]}")
    read -r w1 c1 j1 <<<"$r1"
    read -r w2 c2 _ <<<"$r2"
    "$PY" - "$m" "$rep" "$n1" "$n2" "$w1" "$w2" "$c1" "$c2" "$j1" >>"$RESULTS" <<'EOF'
import json, sys
m, rep, n1, n2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
w1, w2, c1, c2 = map(float, sys.argv[5:9])
curve = json.load(open(sys.argv[9]))["report"]["curve"][:3]
print(json.dumps({"side": "ours", "method": m, "rep": rep, "wall_ms": (w2 - w1) / (n2 - n1) * 1e3,
                  "cpu_ms": (c2 - c1) / (n2 - n1) * 1e3, "curve": curve}))
EOF
    "$PY" bench/unlearn_torch.py "$m" --model "$MODEL" "${COMMON[@]}" "${targs[@]}" \
      --threads "$THREADS" --warmup 2 --steps $((n2 - n1)) --report-steps 3 >"$OUT/torch.json"
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); r["rep"]=int(sys.argv[2]); print(json.dumps(r))' \
      "$OUT/torch.json" "$rep" >>"$RESULTS"
    tail -n 2 "$RESULTS" | "$PY" -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l)
    w = r.get("wall_ms", r.get("mean_ms")); c = r.get("cpu_ms", r.get("cpu_mean_ms"))
    print("  %s rep %d %-5s: %9.1f ms/step wall, %9.1f ms/step CPU" % (r["method"], r["rep"], r["side"], w, c))'
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
print("\nmedian over reps; ours = mean step (difference of runs), torch = mean and median step")
print(f"{'method':6s} {'ours wall':>10s} {'torch wall':>10s} {'ratio':>6s} | {'ours CPU':>9s} {'torch CPU':>9s} {'(median)':>9s} {'ratio':>6s}   ms/step")
for m in dict.fromkeys(r["method"] for r in rows):
    o = [r for r in rows if r["method"] == m and r["side"] == "ours"]
    t = [r for r in rows if r["method"] == m and r["side"] == "torch"]
    ow, oc = med(r["wall_ms"] for r in o), med(r["cpu_ms"] for r in o)
    tw, tc = med(r["mean_ms"] for r in t), med(r["cpu_mean_ms"] for r in t)
    tcm = med(r["cpu_median_ms"] for r in t)
    print(f"{m:6s} {ow:10.1f} {tw:10.1f} {tw / ow:6.2f} | {oc:9.1f} {tc:9.1f} {tcm:9.1f} {tc / oc:6.2f}")
print("(ratio = torch / ours: above 1, ours is faster)")
print("\nstep losses (first rep), ours vs torch, relative difference:")
for m in dict.fromkeys(r["method"] for r in rows):
    o = next(r for r in rows if r["method"] == m and r["side"] == "ours")
    t = next(r for r in rows if r["method"] == m and r["side"] == "torch")
    for ro, rt in zip(o["curve"], t["curve"]):
        for k, v in rt.items():
            if k == "step" or ro.get(k) is None:
                continue
            rel = abs(ro[k] - v) / max(abs(v), 1e-12)
            print(f"  {m} step {rt['step']} {k:12s} ours {ro[k]:.7g}  torch {v:.7g}  rel {rel:.1e}")
    print(f"  {m} tokens per step (torch side): {t['real_tokens_per_step']:.1f} real, "
          f"{t['padded_tokens_per_step']:.1f} padded; torch {t['torch']}, {t['threads']} thread(s)")
EOF
[ "$(data_sum)" = "$SUM0" ] || { echo "the forget/retain files changed during the run: figures invalid" >&2; exit 1; }
