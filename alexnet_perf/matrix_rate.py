"""This machine's matrix-multiply rate per precision: what the step and inference profiles set their achieved rates
against. A large n×n×n product is timed on torch's threads; the rates are in GFLOP/s (for int8, giga integer
operations per second, a multiply and an add counted as two, like the network's FLOPs)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn

PRECISIONS: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32, "int8": torch.int8}


def _timed_rates(run: Callable[[], object], flops: float, reps: int) -> dict[str, float]:
    """GFLOP/s of run: the fastest of reps (after one untimed call) and the median."""
    run()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return {"best_gflops": flops / min(seconds) / 1e9, "median_gflops": flops / statistics.median(seconds) / 1e9}


def _ways(precision: str, n: int) -> dict[str, Callable[[], object]]:
    """The ways the product is done. Floating point: torch.mm (BLAS) and the same product as a 1×1 convolution
    (oneDNN, the library the network's convolutions use; on some CPUs the fp32 BLAS path is much slower than
    oneDNN's). int8: torch._int_mm, int8 × int8 summed in int32 (the VNNI instructions the INT8 backends use)."""
    if precision == "int8":
        a, b = (torch.randint(-128, 128, (n, n), dtype=torch.int8) for _ in range(2))
        return {"int_mm": lambda: torch._int_mm(a, b)}
    dtype = PRECISIONS[precision]
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    x = a.view(1, n, 1, n).permute(0, 3, 1, 2)  # a's rows as the n pixels of a channels-last n×1 image
    w = b.T.contiguous().view(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    return {"mm": lambda: torch.mm(a, b), "conv1x1": lambda: nn.functional.conv2d(x, w)}


def matrix_rate(precision: str, n: int, reps: int) -> dict[str, float]:
    """GFLOP/s of an n×n×n matrix product in precision (bf16, fp32 or int8), done each of its ways: the faster way
    gives best_gflops and median_gflops; each way's best is kept too."""
    ways = {name: _timed_rates(run, 2 * n ** 3, reps) for name, run in _ways(precision, n).items()}
    fastest_way = max(ways, key=lambda k: ways[k]["best_gflops"])
    return {**ways[fastest_way], "way": fastest_way,
            **{f"{k}_best_gflops": r["best_gflops"] for k, r in ways.items()}}


def matrix_rates(precisions: tuple[str, ...], n: int, reps: int) -> dict[str, dict[str, float]]:
    """matrix_rate of each precision, keyed by it."""
    return {name: matrix_rate(name, n, reps) for name in precisions}


def fastest(*measurements: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per precision, the measurement with the higher best rate: the profiles measure the rate before and after their
    work, so that other work on the machine during one of them does not lower it."""
    return {name: max((m[name] for m in measurements), key=lambda r: r["best_gflops"])
            for name in measurements[0]}
