#!/usr/bin/env bash
# The composition sweep on SmolLM2-135M-Instruct through workflow/Snakefile: every
# cross-category pair of {MEMIT, RMU, Wanda 0.25/0.5, RTN 4/8-bit} in both orders, evaluated on
# small slices, scored, and reported in target/sweep-smollm2/report/ (report.md + SVG figures).
# Until the editing and unlearning subcommands exist in this build, it runs the compression
# part (workflow/config/smollm2_compress.yaml) and says so.
#
#   scripts/sweep.sh [-j N] [extra snakemake args]   # default -j 2
#
# Needs: the model (scripts/demo.sh fetches and imports it), python3 >= 3.11 with venv (for
# snakemake==9.27.1, installed into target/snake-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
SNAKEMAKE_VERSION=9.27.1
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$gguf" ] || ./scripts/demo.sh
cargo build --release --quiet
bin="$PWD/target/release/intervene"
venv=target/snake-venv
if [ ! -x "$venv/bin/snakemake" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "snakemake==$SNAKEMAKE_VERSION"
fi
config=workflow/config/smollm2.yaml
for op in memit rmu; do
  if ! "$bin" "$op" --help >/dev/null 2>&1; then
    echo "note: this build has no \`$op\` subcommand yet; running the compression part ($config -> smollm2_compress.yaml)" >&2
    config=workflow/config/smollm2_compress.yaml
    break
  fi
done
if [ "$config" = workflow/config/smollm2.yaml ] && [ ! -f data/facts/facts_forget_mc.jsonl ]; then
  echo "error: the facts forget/retain benchmark (data/facts/, see the unlearning section of the README) is missing" >&2
  exit 2
fi
jobs=(-j 2)
if [ "${1:-}" = -j ]; then jobs=(-j "$2"); shift 2; fi
start=$(date +%s)
"$venv/bin/snakemake" -s workflow/Snakefile --configfile "$config" \
  --config intervene="$bin" "${jobs[@]}" --quiet rules "$@"
out=$(sed -n 's/^out: //p' "$config")
echo "sweep finished in $(( $(date +%s) - start )) s: $out/report/report.md"
