#!/usr/bin/env bash
# Builds, on this machine, what `bench/gpu_device.sh` runs on a GPU machine that has no Rust
# toolchain, and copies it into `.devbin/` (ignored through .git/info/exclude, not
# .gitignore; pass it to the device with `carry: [".devbin"]`):
#   intervene_lib_tests   the library's release unit-test executable (the GPU parity tests
#                         are its `backend::gpu` tests)
#   gpu_forward_tests     the release integration test tests/gpu_forward.rs
#   gpu_bench             examples/gpu_bench.rs
#   intervene             the CLI
#   lib/libvulkan.so.1    this machine's Vulkan loader, for a device image without one
#   MANIFEST_DIR, COMMIT  where it was built (tests read fixtures through that path) and what
# Binaries are stripped of debug info to stay well inside the device tool's 64 MiB carry.
#   bench/gpu_device_prepare.sh
# With `--compare LLAMA_BENCH`, it fills `.devbin/` for the same-card comparison instead
# (llama.cpp's benchmark is too large to travel beside the tests): gpu_bench, the Vulkan loader,
# the given llama-bench (a Vulkan build of llama.cpp) with its libgomp, and SmolLM2-135M with
# zeroed F32 and F16 weights (`bench/zero_gguf.py` on models/SmolLM2-135M-Instruct.Q4_1.gguf,
# gzipped: ~1 MB each). `PYTHON` must have the `gguf` package (default /opt/pyref/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=.devbin
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.devbin/' "$exclude" 2>/dev/null || echo '/.devbin/' >>"$exclude"
rm -rf "$out"
mkdir -p "$out/lib"

if [ "${1:-}" = --compare ]; then
  llama=${2:?usage: bench/gpu_device_prepare.sh --compare PATH/TO/llama-bench}
  py=${PYTHON:-/opt/pyref/bin/python}
  gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$gguf" ] || { echo "gpu_device_prepare: $gguf missing (scripts/fetch_smollm2.sh)" >&2; exit 1; }
  cargo build --release --example gpu_bench
  cp "${CARGO_TARGET_DIR:-target}/release/examples/gpu_bench" "$out/gpu_bench"
  cp "$llama" "$out/llama-bench"
  strip --strip-debug "$out/gpu_bench" "$out/llama-bench"
  gomp=$(ldd "$llama" | awk '/libgomp/ {print $3}')
  [ -z "$gomp" ] || cp -L "$gomp" "$out/lib/"
  for dt in f32 f16; do
    "$py" bench/zero_gguf.py "$gguf" "$out/smollm2-zero-$dt.gguf" "$dt"
    gzip -f "$out/smollm2-zero-$dt.gguf"
  done
else
# Test executables: their paths come from cargo's JSON messages (the hash in the file name
# changes with the build).
tests=$(cargo test --release --no-run --lib --test gpu_forward --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
         | "\(.target.name) \(.target.kind[0]) \(.executable)"')
lib_exe=$(awk '$2 == "lib" {print $3}' <<<"$tests")
fwd_exe=$(awk '$1 == "gpu_forward" {print $3}' <<<"$tests")
if [ -z "$lib_exe" ] || [ -z "$fwd_exe" ]; then
  echo "gpu_device_prepare: could not find the test executables in cargo's output:" >&2
  echo "$tests" >&2
  exit 1
fi
cargo build --release --example gpu_bench --bin intervene
target=${CARGO_TARGET_DIR:-target}
cp "$lib_exe" "$out/intervene_lib_tests"
cp "$fwd_exe" "$out/gpu_forward_tests"
cp "$target/release/examples/gpu_bench" "$out/gpu_bench"
cp "$target/release/intervene" "$out/intervene"
for f in "$out"/intervene_lib_tests "$out"/gpu_forward_tests "$out"/gpu_bench "$out"/intervene; do
  strip --strip-debug "$f"
done
fi
vk=$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ {print $NF; exit}')
if [ -n "$vk" ]; then
  cp -L "$vk" "$out/lib/libvulkan.so.1"
else
  echo "gpu_device_prepare: no libvulkan.so.1 here to carry (apt-get install libvulkan1)" >&2
fi
echo "$root" >"$out/MANIFEST_DIR"
git rev-parse HEAD >"$out/COMMIT"
du -sh "$out"
ls -l "$out" "$out/lib"
