#!/usr/bin/env bash
# Compression quality on SmolLM2 (issue 5): each method on 32 C4 windows of 2048 tokens, then
# WikiText-2 perplexity over the first $PPL_WINDOWS non-overlapping 2048-token windows, and
# zero-shot MMLU accuracy on the first $MMLU_PER_SUBJECT questions of each provided subject.
# Usage: bench/compress.sh [ROWS...]   (rows: base rtn-4-64 gptq-4-64 gptqs-4-64 awq-4-64 ...;
#        gptqs = gptq --static-groups)
# Writes one JSON line per row to bench/out/compress.jsonl; bench/RESULTS.md holds the table.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
MODEL=${MODEL:-models/smollm2}
C4=${C4:-../shared/data/calibration/c4/c4_en_validation_2k.jsonl}
WT=${WT:-../shared/data/wikitext2}
PPL_WINDOWS=${PPL_WINDOWS:-40}
MMLU=${MMLU:-../shared/data/mmlu/test}
MMLU_PER_SUBJECT=${MMLU_PER_SUBJECT:-2}
OUT=${BENCH_OUT:-bench/out}
mkdir -p "$OUT"
cargo build --release --quiet --bin intervene --example ppl
BIN=$CARGO_TARGET_DIR/release/intervene
PPL=$CARGO_TARGET_DIR/release/examples/ppl
CAL=(--calib "$C4" --calib-samples 32 --seqlen 2048 --seed 0)

ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(base rtn-4-64 gptq-4-64 awq-4-64 magnitude-50 wanda-50 sparsegpt-50
  rtn-4-128 gptq-4-128 awq-4-128 rtn-3-64 gptq-3-64 awq-3-64 magnitude-2:4 wanda-2:4 sparsegpt-2:4)
for row in "${ROWS[@]}"; do
  dir=$OUT/$row
  IFS=- read -r method a b <<<"$row"
  case $method in
    base) args=() ;;
    rtn) args=(rtn --bits "$a" --group-size "$b") ;;
    gptq) args=(gptq --bits "$a" --group-size "$b" "${CAL[@]}") ;;
    gptqs) args=(gptq --bits "$a" --group-size "$b" --static-groups "${CAL[@]}") ;;
    awq) args=(awq --bits "$a" --group-size "$b" "${CAL[@]}") ;;
    magnitude|wanda|sparsegpt)
      if [[ $a == *:* ]]; then s=(--pattern "$a"); else s=(--sparsity "0.$a"); fi
      args=("$method" "${s[@]}")
      [ "$method" = magnitude ] || args+=("${CAL[@]}") ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  secs=0
  if [ "$method" = base ]; then
    dir=$MODEL
  else
    t0=$(date +%s.%N)
    "$BIN" -q "${args[0]}" "$MODEL" -o "$dir" --force "${args[@]:1}" >/dev/null
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
  fi
  ppl=$("$PPL" "$dir" "$WT/wiki.test.raw" "$WT/wiki.test.tokens" "$PPL_WINDOWS" 2048)
  mmlu=$("$BIN" -q eval "$dir" --task mc --data "$MMLU" --limit-per-subject "$MMLU_PER_SUBJECT" \
    --no-record --json | python3 -c "import json,sys;r=json.load(sys.stdin);print(json.dumps({'acc':r['acc'],'count':r['count']}))")
  sp=$(python3 -c "import json,sys;r=json.load(open('$dir/provenance.json'))['chain'][-1].get('report',{});print(r.get('sparsity_overall',0))")
  echo "{\"row\":\"$row\",\"compress_seconds\":$secs,\"sparsity\":$sp,\"eval\":$ppl,\"mmlu\":$mmlu}" | tee -a "$OUT/compress.jsonl"
  [ "$method" = base ] || rm -rf "$dir"
done
