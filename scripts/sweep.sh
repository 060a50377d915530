#!/usr/bin/env bash
# The composition sweep on SmolLM2-135M-Instruct (the README's main command): fetch the model
# (scripts/fetch_smollm2.sh), build intervene, create a Python venv with snakemake==9.27.1, and
# run workflow/Snakefile with workflow/config/smollm2.yaml: import, MEMIT, RMU, magnitude
# pruning 0.25/0.5 and RTN 4/8-bit, every cross-category pair in both orders, every checkpoint
# evaluated on small slices, every pair scored, and the report (report.md, scores.json, SVG
# figures) in OUT/report. The config's header gives the measured per-job costs and the
# estimated time (under 30 minutes on 2 idle cores with the default -j 2).
#
#   scripts/sweep.sh [-o OUT] [-j N] [extra snakemake args]   # defaults: target/sweep-smollm2, -j 2
#
# Re-running resumes from the finished cells. Needs cargo, python3 (>= 3.11, with venv and
# pip) and network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAKEMAKE_VERSION=9.27.1
config=workflow/config/smollm2.yaml
out=$(sed -n 's/^out: //p' "$config")
jobs=2
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    *) break ;;
  esac
done
./scripts/fetch_smollm2.sh >/dev/null
for f in data/facts/forget_mc.jsonl data/facts/retain_mc.jsonl data/facts/forget_text.jsonl \
  data/facts/retain_text.jsonl; do
  [ -f "$f" ] || { echo "error: $f is missing (the facts benchmark, see the README's unlearning section)" >&2; exit 2; }
done
cargo build --release --quiet
bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/intervene"
venv=target/snake-venv
if [ ! -x "$venv/bin/snakemake" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "snakemake==$SNAKEMAKE_VERSION"
fi
start=$(date +%s)
"$venv/bin/snakemake" -s workflow/Snakefile --configfile "$config" \
  --config intervene="$bin" out="$out" -j "$jobs" --quiet rules "$@"
echo "sweep finished in $(( $(date +%s) - start )) s: $out/report/report.md"
