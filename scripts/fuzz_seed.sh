#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>/, gitignored) from the committed fixtures and
# the committed regression inputs. Small files only: the corpus is a starting point, not data.
set -euo pipefail
cd "$(dirname "$0")/.."
c=fuzz/corpus
mkdir -p "$c"/{safetensors,gguf,gguf_import,provenance,requests,mc,text}
seed() { # seed TARGET FILE...  (files over 256 KiB are skipped)
    local t=$1; shift
    for f in "$@"; do
        [ -f "$f" ] || continue
        [ "$(stat -c %s "$f")" -le 262144 ] || continue
        cp "$f" "$c/$t/$(echo "$f" | tr '/' '_')"
    done
}
seed safetensors fixtures/tiny/hf/*.safetensors fixtures/tiny/hf_variant/*.safetensors \
    fixtures/tiny/q8_0_dequant/*.safetensors
seed gguf fixtures/gguf/*.gguf fixtures/tiny/*.gguf
seed gguf_import fixtures/tiny/tiny_q8_0.gguf fixtures/gguf/types_v2.gguf fixtures/tiny/tiny.gguf
# provenance.json files: import the tiny fixture and compress it once, if the binary is built.
bin=${CARGO_TARGET_DIR:-target}/release/intervene
if [ -x "$bin" ]; then
    t=$(mktemp -d)
    "$bin" -q import fixtures/tiny/hf -o "$t/a" >/dev/null
    "$bin" -q rtn "$t/a" -o "$t/b" >/dev/null
    cp "$t/a/provenance.json" "$c/provenance/import.json"
    cp "$t/b/provenance.json" "$c/provenance/rtn.json"
    rm -rf "$t"
fi
seed requests fixtures/data/zsre_mend_train_first20.jsonl fixtures/data/counterfact_*.jsonl
seed mc fixtures/data/mmlu/*.csv fixtures/data/wmdp_bio_first20.jsonl
seed text fixtures/data/wikitext2_test_raw_first200.txt fixtures/data/c4_en_validation_first94.jsonl
# Larger fixtures: a few leading lines keep the seeds small and fast.
head -c 65536 fixtures/data/c4_en_validation_first94.jsonl | head -n 20 > "$c/text/c4_head.jsonl"
head -n 60 fixtures/data/wikitext2_test_raw_first200.txt > "$c/text/wikitext_head.txt"
# Regression inputs found by earlier runs stay in the corpus.
for d in fixtures/fuzz_regressions/*/; do
    [ -d "$d" ] || continue
    t=$(basename "$d")
    [ -d "$c/$t" ] && cp "$d"* "$c/$t/" 2>/dev/null || true
done
for t in "$c"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
