#!/usr/bin/env bash
# Runs the GPU backend's checks and benchmark on a machine with a real GPU (H100/H200,
# x86-64 Linux) from PREBUILT binaries, for machines without a Rust toolchain. Build them here
# with `bench/gpu_device_prepare.sh` (it fills `.devbin/`), carry that folder to the device,
# and run from the repository root:
#   bench/gpu_device.sh .devbin
# It prints the adapter, runs every GPU parity test (the library's `backend::gpu` tests and
# tests/gpu_forward.rs) with INTERVENE_REQUIRE_GPU=1, so a missing adapter fails instead of
# skipping, then examples/gpu_bench (matmul GFLOP/s incl. 4096^3, whole forward) and a short
# matmul tuning sweep against the card's f32 peak. Logs and a summary go under $OUT (or a
# temporary folder). Every step has a time limit; the whole run stays under about 6 minutes.
set -uo pipefail
dir=$(cd "${1:?usage: bench/gpu_device.sh DIR (made by bench/gpu_device_prepare.sh)}" && pwd)
cd "$(dirname "$0")/.."
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
log() { echo "$*" | tee -a "$summary"; }
status=0

log "date: $(date -u +%Y-%m-%dT%H:%MZ)  built from commit: $(cat "$dir/COMMIT" 2>/dev/null || echo unknown)"
log "host: $(uname -srm); $(ldd --version 2>/dev/null | head -1)"
log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
if command -v nvidia-smi >/dev/null; then
  log "gpu: $(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader 2>&1 | head -4)"
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true

# The Vulkan loader: the system's if present, else the one carried in DIR/lib.
if ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
  log "vulkan loader: system"
elif [ -e "$dir/lib/libvulkan.so.1" ]; then
  export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  log "vulkan loader: carried ($dir/lib/libvulkan.so.1)"
else
  log "vulkan loader: none found and none carried"
fi
# The NVIDIA ICD manifest. Containers may get the driver's libraries without the JSON that
# tells the loader about them, or with one naming a library the loader cannot use (on the
# 2026-11-27 image, libGLX_nvidia.so.0 gave no vkCreateInstance). So: try the setup as it is;
# if wgpu sees no adapter, keep the loader's account of why, then write a manifest of our own
# for each NVIDIA Vulkan library the image has until one works.
icd=$(ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json \
  /usr/local/share/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1)
log "vulkan icd: ${icd:-no nvidia_icd.json}"
probe() {
  timeout 60 "$dir/gpu_bench" --quick --matmul-only --gpu-only >"$out/probe_$1.txt" 2>&1 &&
    grep -q '^adapter:' "$out/probe_$1.txt"
}
if ! probe first; then
  log "no adapter with the setup above; loader log in $out/loader_debug.txt"
  VK_LOADER_DEBUG=error,warn,driver timeout 60 "$dir/gpu_bench" --quick --matmul-only --gpu-only \
    >"$out/loader_debug.txt" 2>&1
  grep -iE 'error|warn|fail|nvidia' "$out/loader_debug.txt" | head -15 | tee -a "$summary"
  libs=$(find / -xdev \( -name 'libGLX_nvidia.so.0' -o -name 'libEGL_nvidia.so.0' \
    -o -name 'libnvidia-vulkan-producer.so*' \) 2>/dev/null | head -4)
  [ -n "$libs" ] || log "vulkan icd: no NVIDIA Vulkan library found (the image lacks the driver's graphics libraries)"
  for lib in $libs; do
    cat >"$out/nvidia_icd_own.json" <<JSON
{"file_format_version": "1.0.0", "ICD": {"library_path": "$lib", "api_version": "1.3.0"}}
JSON
    export VK_DRIVER_FILES="$out/nvidia_icd_own.json" VK_ICD_FILENAMES="$out/nvidia_icd_own.json"
    if probe own; then
      log "vulkan icd: own manifest for $lib works"
      break
    fi
    log "vulkan icd: own manifest for $lib: no adapter"
    unset VK_DRIVER_FILES VK_ICD_FILENAMES
  done
fi
grep -m1 '^adapter:' "$out"/probe_*.txt | tee -a "$summary"

# Same-card comparison (a DIR from `bench/gpu_device_prepare.sh --compare`): our whole forward
# against llama.cpp's Vulkan backend on SmolLM2-135M with zeroed weights (same shapes; the
# kernels' time does not depend on the values), 128- and 512-token prefills, then stop.
if [ -x "$dir/llama-bench" ]; then
  export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  tmp=$(mktemp -d)
  for dt in f32 f16; do gunzip -c "$dir/smollm2-zero-$dt.gguf.gz" >"$tmp/smollm2-zero-$dt.gguf"; done
  for round in 1 2; do
    timeout 120 "$dir/gpu_bench" --forward-only --gpu-only --tokens 128 --tokens 512 \
      >"$out/ours_$round.txt" 2>&1
    log "ours, round $round: exit $? $(grep -E '^forward' "$out/ours_$round.txt" | tr '\n' ' ')"
    timeout 180 "$dir/llama-bench" -m "$tmp/smollm2-zero-f32.gguf,$tmp/smollm2-zero-f16.gguf" \
      -p 128,512 -n 0 -ngl 99 -fa 0,1 -r 5 -o md >"$out/llama_$round.txt" 2>&1
    log "llama.cpp, round $round: exit $?"
    grep -E '^\|' "$out/llama_$round.txt" | tee -a "$summary"
  done
  grep -iE 'ggml_vulkan: [0-9]|device' "$out/llama_1.txt" | head -3 | tee -a "$summary"
  exit 0
fi

# Tests find fixtures through the path they were built in; point it here if it is missing.
built=$(cat "$dir/MANIFEST_DIR" 2>/dev/null || true)
if [ -n "$built" ] && [ ! -e "$built/fixtures" ]; then
  if mkdir -p "$(dirname "$built")" 2>/dev/null && ln -sfn "$(pwd)" "$built" 2>/dev/null; then
    log "fixtures: linked $built -> $(pwd)"
  else
    log "fixtures: cannot link $built here; fixture-reading tests will fail"
  fi
fi

run() { # name limit_s command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  log "$name: exit $rc in $((SECONDS - t0)) s ($out/$name.txt)"
  [ "$rc" -eq 0 ] || status=1
  return $rc
}

export INTERVENE_REQUIRE_GPU=1
run parity_lib 240 "$dir/intervene_lib_tests" backend::gpu --test-threads=1
grep -E '^test result|FAILED|panicked' "$out/parity_lib.txt" | head -20 | tee -a "$summary"
run parity_forward 120 "$dir/gpu_forward_tests" --test-threads=1
grep -E '^test result|FAILED|panicked' "$out/parity_forward.txt" | head -10 | tee -a "$summary"
unset INTERVENE_REQUIRE_GPU

run gpu_bench 180 "$dir/gpu_bench"
grep -E '^adapter|^tuning|^\||forward' "$out/gpu_bench.txt" | tee -a "$summary"

# The card's f32 peak: SMs x 128 f32 lanes (Hopper) x 2 flops x the maximum SM clock.
peak_gflops=
if command -v nvidia-smi >/dev/null; then
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  mhz=$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits | head -1 | xargs)
  case "$name" in
    *H200* | *"H100 80GB HBM3"* | *"H100 SXM"* | *"H100 NVL"*) sms=132 ;;
    *"H100 PCIe"*) sms=114 ;;
    *) sms= ;;
  esac
  if [ -n "$sms" ] && [ -n "$mhz" ]; then
    peak_gflops=$((sms * 128 * 2 * mhz / 1000))
    log "f32 peak: $sms SMs x 128 lanes x 2 x $mhz MHz = $peak_gflops GFLOP/s"
  else
    log "f32 peak: unknown for '$name'"
  fi
fi

# Matmul sweep, GPU only, 3 runs each: the default (whose tile steps down for small outputs,
# INTERVENE_GPU_TILE_MIN_GROUPS), the default with naga's loop countdown back on, fixed tile
# shapes (INTERVENE_GPU_TILE=bm,bn,bk,tm,tn, never stepped down), and the register-blocked
# kernels (tile off): the scalar one at its best block from the first H200 run, the vec4 one
# at three blocks. Each summary line has the
# 4096^3 figure and its fraction of the peak.
sweep() { # name env...
  local name=$1
  shift
  env "$@" timeout 60 "$dir/gpu_bench" --quick --matmul-only --gpu-only >"$out/mm_$name.txt" 2>&1
  local rc=$?
  local big
  big=$(awk -F'|' '/^\| 4096 x/ {gsub(/ /, "", $4); print $4}' "$out/mm_$name.txt")
  local rest
  rest=$(awk -F'|' '/^\| [0-9]/ && !/^\| 4096/ {gsub(/ /, "", $4); printf "%s ", $4}' "$out/mm_$name.txt")
  local err
  err=$(awk -F'|' '/^\| [0-9]/ {gsub(/ /, "", $6); printf "%s ", $6}' "$out/mm_$name.txt")
  local frac=
  [ -n "$peak_gflops" ] && [ -n "$big" ] && frac=$(awk -v g="$big" -v p="$peak_gflops" 'BEGIN {printf "%.1f%%", 100 * g / p}')
  log "sweep $name: exit $rc; 4096^3 ${big:-?} GFLOP/s ${frac:+($frac of peak)}; 1024^3/512x576x1536/512x1536x576: ${rest:-?}; max rel err: $err"
}
sweep default
sweep default_again
sweep default_no_step_down INTERVENE_GPU_TILE_MIN_GROUPS=0
sweep loopbound INTERVENE_GPU_LOOP_BOUNDING=1
for t in 128,128,16,8,8 128,128,8,8,8 128,128,32,8,8 64,64,16,4,4 128,64,16,8,4 64,128,16,4,8 \
  128,128,32,4,4 256,128,16,16,8 128,256,16,8,16 256,128,32,16,8; do
  sweep "tile_${t//,/_}" INTERVENE_GPU_TILE=$t INTERVENE_GPU_TILE_MIN_GROUPS=0
done
sweep off_32_8_4 INTERVENE_GPU_TILE=off INTERVENE_GPU_MATMUL=32,8,4
# The same with the vec4 register kernel (matmul_vec4.wgsl, software adapters' default).
for b in 4,4 8,4 8,8; do
  sweep "off_vec4_64_${b//,/_}" INTERVENE_GPU_TILE=off INTERVENE_GPU_MATMUL=64,4,4 INTERVENE_GPU_MATMUL4=$b
done
run cli_help 20 "$dir/intervene" --help
log "overall: $([ $status -eq 0 ] && echo ok || echo FAILED)"
exit $status
