#!/usr/bin/env bash
# Evaluation throughput on SmolLM2, ours vs transformers on the CPU, in one run:
# MMLU questions/s (the first PER_SUBJECT questions of every subject in MMLU_DIR) and
# WikiText-2 perplexity tokens/s (the first WINDOWS windows of SEQLEN tokens).
# Both sides use the same questions, windows and thread count (THREADS, default all cores).
#
#   bench/eval.sh            # defaults below; env vars override
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/smollm2}
DATA=${DATA:-../shared/data}
MMLU_DIR=${MMLU_DIR:-$DATA/mmlu/test}
PER_SUBJECT=${PER_SUBJECT:-5}
WIKI=${WIKI:-$DATA/wikitext2/wiki.test.raw}
LAYOUT=${LAYOUT:-$DATA/wikitext2/wiki.test.tokens}
SEQLEN=${SEQLEN:-2048}
WINDOWS=${WINDOWS:-4}
THREADS=${THREADS:-$(nproc)}
PY=${PY:-/opt/pyref/bin/python}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/intervene}

[ -x "$BIN" ] || cargo build --release >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git rev-parse --short HEAD); threads: $THREADS"

t0=$(date +%s.%N)
ours_mc=$("$BIN" --threads "$THREADS" -q eval "$MODEL" --task mc --data "$MMLU_DIR" \
  --limit-per-subject "$PER_SUBJECT" --no-record --json)
t1=$(date +%s.%N)
ours_ppl=$("$BIN" --threads "$THREADS" -q eval "$MODEL" --task ppl --data "$WIKI" --layout "$LAYOUT" \
  --seqlen "$SEQLEN" --limit "$WINDOWS" --batch-size 1 --no-record --json)
t2=$(date +%s.%N)
hf=$("$PY" bench/eval_transformers.py --model "$MODEL" --mmlu "$MMLU_DIR" --per-subject "$PER_SUBJECT" \
  --wiki "$WIKI" --layout "$LAYOUT" --seqlen "$SEQLEN" --windows "$WINDOWS" --threads "$THREADS" 2>/dev/null)

"$PY" - "$ours_mc" "$ours_ppl" "$hf" "$t0" "$t1" "$t2" <<'PY'
import json, sys
mc, ppl, hf = (json.loads(s) for s in sys.argv[1:4])
t0, t1, t2 = map(float, sys.argv[4:7])
# The binary's own `seconds` excludes process start and model load, as the Python timings do.
q, tok = mc["count"], ppl["windows"] * (ppl["predicted_tokens"] // ppl["windows"] + 1)
rows = [
    ("MMLU questions/s", q / mc["seconds"], hf["questions"] / hf["mc_seconds"]),
    ("ppl tokens/s", tok / ppl["seconds"], hf["ppl_tokens"] / hf["ppl_seconds"]),
]
print(f"questions {q} (acc ours {mc['acc']:.4f}, transformers {hf['mc_acc']:.4f}); "
      f"ppl tokens {tok} (ours {ppl['ppl']:.4f}, transformers {hf['ppl']:.4f})")
print(f"wall incl. load: ours mc {t1 - t0:.1f} s, ours ppl {t2 - t1:.1f} s")
print(f"{'metric':<18} {'intervene':>10} {'transformers':>13} {'speedup':>8}")
for name, ours, theirs in rows:
    print(f"{name:<18} {ours:>10.1f} {theirs:>13.1f} {ours / theirs:>7.2f}x")
# The same arithmetic on both sides (f32 throughout; ours skips no work the forward needs,
# except that a subject's shared description runs once): its rate against the best
# torch.matmul rate measured here is how far each side is from this machine's f32 ceiling.
peak = hf["matmul_gflops"]
print(f"work: MMLU {hf['mc_gflop']:.1f} GFLOP, ppl {hf['ppl_gflop']:.1f} GFLOP; "
      f"best torch.matmul here {peak:.1f} GFLOP/s")
for name, gflop, secs, hsecs in [("MMLU", hf["mc_gflop"], mc["seconds"], hf["mc_seconds"]),
                                 ("ppl", hf["ppl_gflop"], ppl["seconds"], hf["ppl_seconds"])]:
    o, t = gflop / secs, gflop / hsecs
    print(f"{name:<5} GFLOP/s: ours {o:6.1f} ({o / peak:4.0%} of matmul best), "
          f"transformers {t:6.1f} ({t / peak:4.0%}); 2x transformers needs {2 * t:6.1f}")
PY
