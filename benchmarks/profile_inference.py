"""Where an OpenVINO backend's inference time goes: per-operator time from OpenVINO's own performance counters.

    python benchmarks/profile_inference.py [--precision int8] [--batch-size 1] [--exports exports]

Compiles the exported ONNX file exactly as onnx_backends.openvino_backend does (compile_for_batch: same precision
hint, performance hint, threads and fixed batch size) plus PERF_COUNT, runs the batch, and sums each operator type's
real time over --calls calls. Sets the rate the calls reach (the network's FLOPs, or int8 operations, per second)
against the matrix rate of the same precision measured in the same run (alexnet_perf.matrix_rate, before and after
the calls). Prints the table and the mean time per call, and writes them as a marked section of
benchmarks/RESULTS.md (key `inference-profile-PRECISION-bBATCH`). Time it on a quiet machine.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alexnet_perf import flags
from alexnet_perf.artifacts import FILES, INT8, ONNX
from alexnet_perf.artifacts import load_artifact
from alexnet_perf.matrix_rate import fastest, matrix_rates
from alexnet_perf.model import flops_per_sample
from alexnet_perf.onnx_backends import compile_for_batch, openvino_threads
from alexnet_perf.records import LOCAL_RESULTS, machine_description, update_section

PROG = "python benchmarks/profile_inference.py"
MATRIX_OPERATORS = ("Convolution", "FullyConnected", "MatMul")  # the operator types that do all the counted FLOPs


@dataclass
class ProfileInferenceConfig:
    precision: str = flags.option("int8", "OpenVINO backend to profile: fp32, bf16 (both from the fp32 ONNX file) or "
                                        "int8 (the QDQ file)", choices=("fp32", "bf16", "int8"))
    batch_size: int = flags.option(1, "images per call", at_least=1, at_most=4096)
    calls: int = flags.option(2000, "timed calls (after 50 untimed ones)", at_least=1)
    exports: str = flags.option("exports", "folder holding the exported ONNX files")
    matrix_size: int = flags.option(2048, "N of the N×N×N products that measure the matrix rate of --precision",
                                    at_least=16)
    matrix_reps: int = flags.option(10, "timed products before and after the calls; the fastest gives the rate",
                                    at_least=1)
    results: bool = flags.option(True, "write the table into --results-file")
    results_file: str = flags.option(LOCAL_RESULTS, "markdown file holding the section (benchmarks/RESULTS.md updates "
                                                  "the project's committed figures)")


@dataclass
class InferenceProfile:
    """Mean ms per call around infer, {operator type: ms per call}, operators executed per call, and the matrix rate
    of the profiled precision (matrix_rate's record: the faster of before and after the calls)."""

    wall_ms: float
    per_type: dict[str, float]
    operators: int
    matrix_rate: dict[str, float]


def profile(cfg: ProfileInferenceConfig) -> InferenceProfile:
    """cfg's backend, profiled."""
    import openvino as ov

    path = Path(cfg.exports) / FILES[INT8 if cfg.precision == "int8" else ONNX]
    core = ov.Core()
    compiled = load_artifact(path, lambda p: compile_for_batch(core, core.read_model(p), cfg.precision, cfg.batch_size,
                                                                torch.get_num_threads(), {"PERF_COUNT": True}))
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((cfg.batch_size, 3, 32, 32), dtype=np.float32)
    for _ in range(50):
        request.infer({0: x})
    before = matrix_rates((cfg.precision,), cfg.matrix_size, cfg.matrix_reps)
    per_type: dict[str, float] = defaultdict(float)
    executed, seconds = 0, 0.0
    for _ in range(cfg.calls):
        start = time.perf_counter()
        request.infer({0: x})
        seconds += time.perf_counter() - start
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                per_type[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds() * 1000
                executed += 1
    rate = fastest(before, matrix_rates((cfg.precision,), cfg.matrix_size, cfg.matrix_reps))[cfg.precision]
    return InferenceProfile(seconds * 1000 / cfg.calls, {k: v / cfg.calls for k, v in per_type.items()},
                            executed // cfg.calls, rate)


def rate_line(cfg: ProfileInferenceConfig, p: InferenceProfile, flops: float) -> str:
    """The rate of the whole call and of its matrix operators, against the matrix rate; flops: per sample."""
    unit = "OP" if cfg.precision == "int8" else "FLOP"
    matrix_ms = sum(ms for name, ms in p.per_type.items() if name.startswith(MATRIX_OPERATORS))
    peak = p.matrix_rate["best_gflops"]
    call, ops = (cfg.batch_size * flops / ms / 1e6 for ms in (p.wall_ms, matrix_ms))
    return (f"Matrix rate of {cfg.precision} (`{p.matrix_rate['way']}`, {cfg.matrix_size}³, the faster of before "
            f"and after the calls): **{peak:,.0f} G{unit}/s**. At {flops / 1e6:.1f} M{unit} per sample, the call "
            f"(with the counters on) runs at {call:,.0f} G{unit}/s (**{100 * call / peak:.0f} %** of it); its "
            f"convolution and fully-connected operators, which do all of those, at {ops:,.0f} G{unit}/s "
            f"(**{100 * ops / peak:.0f} %**) in {matrix_ms:.4f} ms per call.")


def markdown(cfg: ProfileInferenceConfig, p: InferenceProfile, flops: float) -> str:
    """The section: the call's time, the rates, and the operator table; flops: the network's per sample."""
    total = sum(p.per_type.values())
    threads = openvino_threads(cfg.precision, cfg.batch_size, torch.get_num_threads())
    lines = [f"### OpenVINO {cfg.precision}, batch {cfg.batch_size}: time per operator type", "",
             f"Command: `{flags.command_line(PROG, cfg)}`  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine_description()}; "
             f"{threads} thread{'' if threads == 1 else 's'}", "",
             f"{p.wall_ms:.4f} ms per call ({p.wall_ms / cfg.batch_size:.4f} ms/sample) measured around `infer`; the "
             f"{p.operators} executed operators' own counters sum to {total:.4f} ms per call.", "",
             rate_line(cfg, p, flops), "",
             "| operator (kernel) | ms per call | share of operator time |", "| --- | ---: | ---: |"]
    for name, ms in sorted(p.per_type.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {ms:.4f} | {100 * ms / total:.1f} % |")
    return "\n".join(lines) + "\n"


def main(cfg: ProfileInferenceConfig) -> int:
    text = markdown(cfg, profile(cfg), flops_per_sample()["inference"])
    print(text)
    if cfg.results:
        update_section(cfg.results_file, f"inference-profile-{cfg.precision}-b{cfg.batch_size}", text)
        print(f"wrote {cfg.results_file}")
    return 0


if __name__ == "__main__":
    flags.exit_with(flags.run(ProfileInferenceConfig, main, PROG, __doc__.split("\n\n")[0]))
