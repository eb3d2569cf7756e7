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


def _onednn_int8_product(a: torch.Tensor, b: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    """a @ b by oneDNN's int8 linear layer (a's non-negative int8 values read as u8, b's as s8, summed in int32 and
    returned exactly in fp32): the kernel OpenVINO's and inductor's int8 layers use, which on a CPU with AMX runs on its
    int8 tiles, where torch._int_mm does not. None where this torch has no such operator."""
    try:
        packed = torch.ops.onednn.qlinear_prepack(b.T.contiguous(), list(a.shape))
    except (AttributeError, RuntimeError):
        return None
    x, ones, zeros = a.view(torch.uint8), torch.ones(b.shape[1]), torch.zeros(b.shape[1], dtype=torch.long)
    return lambda: torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, packed, ones, zeros, None, 1.0, 0, torch.float32,
                                                      "none", [], "")


def _ways(precision: str, n: int) -> dict[str, Callable[[], object]]:
    """The ways the product is done. Floating point: torch.mm (BLAS) and the same product as a 1×1 convolution
    (oneDNN, the library the network's convolutions use; on some CPUs the fp32 BLAS path is much slower than
    oneDNN's). int8: torch._int_mm, int8 × int8 summed in int32 (the VNNI instructions), and where torch has it
    oneDNN's int8 linear layer (u8 × s8, what the INT8 backends run; AMX tiles where the CPU has them)."""
    if precision == "int8":
        a = torch.randint(0, 128, (n, n), dtype=torch.int8)  # non-negative: the same values as oneDNN's u8 input
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        ways = {"int_mm": lambda: torch._int_mm(a, b)}
        onednn = _onednn_int8_product(a, b)
        return ways if onednn is None else {**ways, "onednn_linear": onednn}
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
