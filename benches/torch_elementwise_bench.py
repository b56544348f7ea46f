#!/usr/bin/env python3
"""PyTorch's side of `benches/elementwise.rs`: the same ops and shapes, ns per element.

Times each op (median of --reps runs of --inner calls, after a warm-up) and prints one JSON
object per line: dtype, shape, op, threads, ns_per_element. Per-call overhead is included,
as it is on Unroll's side.

    python3 benches/torch_elementwise_bench.py --threads 1

Needs: pip install torch (CPU is enough).
"""
import argparse
import json
import statistics
import time

import torch

SHAPES = [(32, 256), (64, 2048)]


def ns_per_element(fn, n, reps, inner):
    for _ in range(inner):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times) * 1e9 / n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--inner", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for rows, cols in SHAPES:
            a = torch.randn(rows, cols, dtype=dtype)
            b = torch.randn(rows, cols, dtype=dtype)
            bias = torch.randn(cols, dtype=dtype)
            ops = {
                "mul": lambda: a * b,
                "add_bias": lambda: a + bias,
                "tanh": lambda: torch.tanh(a),
                "sigmoid": lambda: torch.sigmoid(a),
                "exp": lambda: torch.exp(a),
                "sum_to": lambda: a.sum(0),
            }
            for op, fn in ops.items():
                ns = ns_per_element(fn, rows * cols, args.reps, args.inner)
                print(json.dumps({
                    "framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                    "dtype": str(dtype).replace("torch.", ""), "shape": f"{rows}x{cols}",
                    "op": op, "ns_per_element": round(ns, 3),
                }), flush=True)


if __name__ == "__main__":
    main()
