"""Where an OpenVINO backend's inference time goes: per-operator time from OpenVINO's own performance counters.

    python benchmarks/profile_inference.py [--precision int8] [--batch-size 1] [--exports exports]

Compiles the exported ONNX file exactly as onnx_backends.openvino_backend does (same precision hint, performance hint
and threads) plus PERF_COUNT, runs the batch, and sums each operator type's real time over --calls calls. Prints the
table and the mean time per call, and writes the table as a marked section of benchmarks/RESULTS.md (key
`inference-profile-PRECISION-bBATCH`). Time it on a quiet machine.
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
from alexnet_perf.onnx_backends import openvino_config
from alexnet_perf.records import LOCAL_RESULTS, machine_description, update_section

PROG = "python benchmarks/profile_inference.py"


@dataclass
class ProfileInferenceConfig:
    precision: str = flags.option("int8", "OpenVINO backend to profile: fp32, bf16 (both from the fp32 ONNX file) or "
                                        "int8 (the QDQ file)", choices=("fp32", "bf16", "int8"))
    batch_size: int = flags.option(1, "images per call", at_least=1, at_most=4096)
    calls: int = flags.option(2000, "timed calls (after 50 untimed ones)", at_least=1)
    exports: str = flags.option("exports", "folder holding the exported ONNX files")
    results: bool = flags.option(True, "write the table into --results-file")
    results_file: str = flags.option(LOCAL_RESULTS, "markdown file holding the section (benchmarks/RESULTS.md updates "
                                                  "the project's committed figures)")


def profile(cfg: ProfileInferenceConfig) -> tuple[float, dict[str, float], int]:
    """(mean ms per call, {operator type: ms per call}, operators executed) for cfg's backend."""
    import openvino as ov

    path = Path(cfg.exports) / FILES[INT8 if cfg.precision == "int8" else ONNX]
    core = ov.Core()
    config = {**openvino_config(cfg.precision, torch.get_num_threads()), "PERF_COUNT": True}
    compiled = load_artifact(path, lambda p: core.compile_model(core.read_model(p), "CPU", config))
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((cfg.batch_size, 3, 32, 32), dtype=np.float32)
    for _ in range(50):
        request.infer({0: x})
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
    return seconds * 1000 / cfg.calls, {k: v / cfg.calls for k, v in per_type.items()}, executed // cfg.calls


def markdown(cfg: ProfileInferenceConfig, wall: float, per_type: dict[str, float], operators: int) -> str:
    total = sum(per_type.values())
    lines = [f"### OpenVINO {cfg.precision}, batch {cfg.batch_size}: time per operator type", "",
             f"Command: `{flags.command_line(PROG, cfg)}`  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine_description()}; "
             f"{torch.get_num_threads()} threads", "",
             f"{wall:.4f} ms per call ({wall / cfg.batch_size:.4f} ms/sample) measured around `infer`; the "
             f"{operators} executed operators' own counters sum to {total:.4f} ms per call.", "",
             "| operator (kernel) | ms per call | share of operator time |", "| --- | ---: | ---: |"]
    for name, ms in sorted(per_type.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {ms:.4f} | {100 * ms / total:.1f} % |")
    return "\n".join(lines) + "\n"


def main(cfg: ProfileInferenceConfig) -> int:
    wall, per_type, operators = profile(cfg)
    text = markdown(cfg, wall, per_type, operators)
    print(text)
    if cfg.results:
        update_section(cfg.results_file, f"inference-profile-{cfg.precision}-b{cfg.batch_size}", text)
        print(f"wrote {cfg.results_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(flags.run(ProfileInferenceConfig, main, PROG, __doc__.split("\n\n")[0]))
