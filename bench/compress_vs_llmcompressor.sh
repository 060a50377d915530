#!/usr/bin/env bash
# Issue 5: our compressors side by side with llmcompressor 0.14.0.1 (PyPI) on this machine, on the
# SAME calibration token windows (printed by examples/calib_windows, which calls the library's
# CalibBatch::prepare; its tokens_blake3 is checked against our run's provenance), then
# WikiText-2 perplexity of both outputs with our evaluator (`intervene eval --task ppl`).
#
# llmcompressor goes into a venv OUTSIDE the repo ($VENV, default ~/.cache/intervene-bench/llmc-venv), made with
# --system-site-packages from /opt/pyref's interpreter plus a .pth pointing at /opt/pyref's
# site-packages so its CPU torch 2.15 is reused. llmcompressor pins torch<=2.14 (which would pull
# ~4 GB of CUDA wheels), so its packages are installed --no-deps at the versions below.
#
# Usage: ROWS="rtn-4-64 gptq-4-64 sparsegpt-50 wanda-50 awq-4-64" N_CALIB=32 SEQLEN=2048 PPL_WINDOWS=40 \
#        THREADS=$(nproc) SYM=0 bench/compress_vs_llmcompressor.sh
# A failing row stops the script with its exit status (every step runs under set -e; the
# command substitutions are separate assignments so their status is not lost).
# SYM=1: symmetric RTN/GPTQ grid on both sides (ours --sym); default asymmetric on both (our default).
# Prints one row per method; appends JSON lines to $OUT/compress_vs_llmc.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
MODEL=${MODEL:-models/smollm2}
C4=${C4:-../shared/data/calibration/c4/c4_en_validation_2k.jsonl}
WT=${WT:-../shared/data/wikitext2}
ROWS=${ROWS:-rtn-4-64 gptq-4-64 sparsegpt-50 wanda-50 awq-4-64}
N_CALIB=${N_CALIB:-32}
SEQLEN=${SEQLEN:-2048}
PPL_WINDOWS=${PPL_WINDOWS:-40}
THREADS=${THREADS:-$(nproc)}
SYM=${SYM:-0}
# llmcompressor fits GPTQ's group grids on the original weights before the solve; ours does so
# with --static-groups (STATIC_GROUPS=1, the like-for-like default) and otherwise refits each
# group as the reference IST-DASLab code does (STATIC_GROUPS=0).
STATIC_GROUPS=${STATIC_GROUPS:-1}
# llmcompressor's GPTQModifier orders columns by the Hessian diagonal unless told otherwise
# (actorder="static"); ACT_ORDER=1 (default) runs that on its side and --act-order on ours,
# ACT_ORDER=0 runs neither. With STATIC_GROUPS=1 both keep groups as runs of original columns.
ACT_ORDER=${ACT_ORDER:-1}
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/intervene-bench/llmc-venv}
PYREF=${PYREF:-/opt/pyref}
OUT=${BENCH_OUT:-bench/out}/llmc
mkdir -p "$OUT"

if ! "$VENV/bin/python" -c "import llmcompressor" 2>/dev/null; then
  "$PYREF/bin/python" -m venv --system-site-packages "$VENV"
  site=$("$VENV/bin/python" -c "import site;print(site.getsitepackages()[0])")
  "$PYREF/bin/python" -c "import site;print(site.getsitepackages()[0])" >"$site/zz_pyref.pth"
  "$VENV/bin/pip" install -q --no-deps llmcompressor==0.14.0.1 compressed-tensors==0.19.0 \
    transformers==5.17.0 auto-round==0.15.1 datasets==5.2.0 loguru==0.7.3 nvidia-ml-py==13.615.71 \
    pillow==13.0.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 pyarrow==26.0.1 pandas==3.1.1 \
    huggingface_hub==1.33.0 hf-xet==1.8.0 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0 \
    typer==0.29.2 shellingham==1.5.4 rich==15.0.0 annotated-doc==0.0.7 markdown-it-py==4.3.0 \
    mdurl==0.1.2 click==8.5.1 py-cpuinfo==9.0.0
fi
PY=$VENV/bin/python

cargo build --release --quiet --bin intervene --example calib_windows
BIN=$CARGO_TARGET_DIR/release/intervene
WIN=$OUT/windows.json
"$CARGO_TARGET_DIR/release/examples/calib_windows" "$MODEL" "$C4" "$N_CALIB" "$SEQLEN" 0 >"$WIN"

# timed CMD...: runs CMD under /usr/bin/time -v; sets SECS and PEAK_MIB.
timed() {
  /usr/bin/time -v -o "$OUT/time.txt" "$@"
  SECS=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,t,":");s=0;for(i=1;i<=n;i++)s=s*60+t[i];print s}' "$OUT/time.txt")
  PEAK_MIB=$(awk -F': ' '/Maximum resident/{printf "%.0f", $2/1024}' "$OUT/time.txt")
}
ppl() {
  "$BIN" -q eval "$1" --task ppl --data "$WT/wiki.test.raw" --layout "$WT/wiki.test.tokens" \
    --seqlen 2048 --limit "$PPL_WINDOWS" --threads "$THREADS" --no-record --json |
    python3 -c "import json,sys;print(json.load(sys.stdin)['ppl'])"
}
MODEL_MIB=$(du -m --apparent-size "$MODEL/model.safetensors" | cut -f1)

printf '%-14s %9s %9s %6s %9s %9s %9s %9s %9s\n' row ours_s theirs_s ratio ours_ppl theirs_ppl \
  ours_MiB theirs_MiB model_MiB
for row in $ROWS; do
  IFS=- read -r method a b <<<"$row"
  calib=(--calib "$C4" --calib-samples "$N_CALIB" --seqlen "$SEQLEN" --seed 0)
  case $method in
    rtn) args=(--bits "$a" --group-size "$b"); calib=()
      [ "$SYM" = 1 ] && args+=(--sym) ;;
    gptq) args=(--bits "$a" --group-size "$b" --block-size 128 --damp 0.01)
      [ "$SYM" = 1 ] && args+=(--sym)
      [ "$STATIC_GROUPS" = 1 ] && args+=(--static-groups)
      [ "$ACT_ORDER" = 1 ] && args+=(--act-order) ;;
    awq) args=(--bits "$a" --group-size "$b") ;;
    sparsegpt) args=(--sparsity "0.$a" --block-size 128 --damp 0.01) ;;
    wanda) args=(--sparsity "0.$a") ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  ours=$OUT/$row-ours theirs=$OUT/$row-llmc
  rm -rf "$ours" "$theirs" "$theirs-imported"
  timed "$BIN" -q "$method" "$MODEL" -o "$ours" "${calib[@]}" --threads "$THREADS" "${args[@]}" \
    >/dev/null
  o_s=$SECS o_mib=$PEAK_MIB
  [ ${#calib[@]} -eq 0 ] || python3 - "$ours/provenance.json" "$WIN" <<'EOF'
import json, sys
rep = json.dumps(json.load(open(sys.argv[1]))["chain"][-1])
want = json.load(open(sys.argv[2]))["tokens_blake3"]
sys.exit(0 if want in rep else f"calibration windows differ: {want} not in our provenance")
EOF
  THREADS=$THREADS SYM=$SYM ACT_ORDER=$ACT_ORDER timed "$PY" bench/llmc_run.py "$row" "$MODEL" "$WIN" "$theirs"
  t_s=$SECS t_mib=$PEAK_MIB
  "$BIN" -q import "$theirs" -o "$theirs-imported" --threads "$THREADS" >/dev/null
  o_ppl=$(ppl "$ours")
  t_ppl=$(ppl "$theirs-imported")
  ratio=$(python3 -c "print(f'{$o_s/$t_s:.3f}')")
  printf '%-14s %9s %9s %6s %9.3f %9.3f %9s %9s %9s\n' "$row" "$o_s" "$t_s" "$ratio" "$o_ppl" \
    "$t_ppl" "$o_mib" "$t_mib" "$MODEL_MIB"
  echo "{\"row\":\"$row\",\"n_calib\":$N_CALIB,\"seqlen\":$SEQLEN,\"ppl_windows\":$PPL_WINDOWS,\"threads\":$THREADS,\"sym\":$SYM,\"static_groups\":$STATIC_GROUPS,\"act_order\":$ACT_ORDER,\"ours_s\":$o_s,\"theirs_s\":$t_s,\"ratio\":$ratio,\"ours_ppl\":$o_ppl,\"theirs_ppl\":$t_ppl,\"ours_peak_mib\":$o_mib,\"theirs_peak_mib\":$t_mib,\"model_mib\":$MODEL_MIB}" >>"$OUT/compress_vs_llmc.jsonl"
  rm -rf "$ours" "$theirs" "$theirs-imported"
done
