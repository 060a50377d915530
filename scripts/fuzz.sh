#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS (default 60) each and prints executions per target.
# Needs `cargo install cargo-fuzz` and a nightly toolchain. Crashes land in
# fuzz/artifacts/<target>/; copy each into fixtures/fuzz_regressions/<target>/ and add it to
# tests/fuzz_regressions.rs. Exit status 1 if any target crashed.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors gguf gguf_import provenance requests mc text)
scripts/fuzz_seed.sh >/dev/null
# Fuzz builds go to their own target dir so they never invalidate the main crate's build.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
(cd fuzz && cargo +nightly fuzz build -O) || exit 2
printf '%-12s %10s %8s %10s %8s\n' target executions seconds exec/s crashes
failed=0
for t in "${targets[@]}"; do
    log=$(mktemp)
    before=$(ls fuzz/artifacts/"$t" 2>/dev/null | wc -l)
    # -rss_limit_mb bounds a hostile allocation; -timeout flags a hang as a crash.
    (cd fuzz && cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1) >"$log" 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1)
    after=$(ls fuzz/artifacts/"$t" 2>/dev/null | wc -l)
    crashes=$((after - before))
    [ $rc -eq 0 ] || { [ $crashes -gt 0 ] || crashes="rc=$rc"; failed=1; tail -n 30 "$log" >&2; }
    [ "$crashes" = 0 ] || failed=1
    rate=$(( ${runs:-0} / ( ${took:-$secs} > 0 ? ${took:-$secs} : 1 ) ))
    printf '%-12s %10s %8s %10s %8s\n' "$t" "${runs:-?}" "${took:-$secs}" "$rate" "$crashes"
    rm -f "$log"
done
exit $failed
