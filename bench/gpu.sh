#!/usr/bin/env bash
# GPU backend benchmark (issue 3): f32 matmul GFLOP/s on the wgpu backend and on the CPU
# backend at 1024^3, 512x576x1536 and 512x1536x576 (and 4096^3 on a hardware adapter), then
# the whole forward (SmolLM2-135M shapes, 128-token prefill) on both. On a real GPU it also
# reports the card and, when PyTorch with CUDA is installed, torch's f32 matmul at the same
# shapes as the reference for "fraction of what the card does". Finishes in a few minutes.
#   bench/gpu.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader || true
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
timeout 240 cargo run --release --quiet --example gpu_bench -- "$@"
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  python3 - <<'PY'
import time, torch
torch.backends.cuda.matmul.allow_tf32 = False  # plain f32, as our kernels
for m, k, n in [(1024, 1024, 1024), (512, 576, 1536), (512, 1536, 576), (4096, 4096, 4096)]:
    x = torch.randn(m, k, device="cuda"); w = torch.randn(n, k, device="cuda")
    for _ in range(3): x @ w.T
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(20): x @ w.T
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 20
    print(f"torch f32 {m} x {k} x {n}: {2*m*n*k/dt/1e9:.0f} GFLOP/s")
PY
fi
