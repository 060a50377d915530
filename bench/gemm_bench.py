#!/usr/bin/env python3
"""The PyTorch side of examples/gemm_bench.rs: torch.nn.functional.linear (y = x w^T) on the
same shapes (read from `gemm_bench shapes` on stdin: name M K N per line), f32 on the CPU,
median of REPS runs after one warm-up.

Usage: gemm_bench shapes | gemm_bench.py [threads] [reps]
"""

import sys
import time

import torch


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    shapes = [(f[0], *map(int, f[1:])) for f in (line.split() for line in sys.stdin) if f]
    for name, m, k, n in shapes:
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
