#!/usr/bin/env python3
"""The PyTorch side of examples/gemm_bench.rs: torch.nn.functional.linear (y = x w^T) on the
same shapes, f32 on the CPU, median of REPS runs after one warm-up.

Usage: gemm_bench.py [threads] [reps]
"""

import sys
import time

import torch

SHAPES = [
    ("qkv", 1024, 576, 960),
    ("o", 1024, 576, 576),
    ("gate_up", 1024, 576, 3072),
    ("down", 1024, 1536, 576),
    ("head_chunk", 256, 576, 49152),
    ("dx_gate_up", 1024, 3072, 576),
    ("dx_down", 1024, 576, 1536),
    ("dw_gate_up", 3072, 1024, 576),
    ("dw_down", 576, 1024, 1536),
]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    for name, m, k, n in SHAPES:
        x = torch.rand(m, k, generator=g) - 0.5
        w = torch.rand(n, k, generator=g) - 0.5
        torch.nn.functional.linear(x, w)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            torch.nn.functional.linear(x, w)
            times.append(time.perf_counter() - t)
        med = sorted(times)[reps // 2]
        gflops = 2 * m * k * n / med / 1e9
        print(f"torch {name:<11} {m:>5} {k:>5} {n:>6} {med:.5f} s {gflops:7.1f} GFLOP/s")


main()
