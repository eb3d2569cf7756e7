"""The registry of inference backends: every runtime the network is served with, by name.

BACKENDS (through backend_specs and create_backend) lists every backend: parity checks each one against the
checkpoint, the benchmark suite times each one, and `predict` serves with any of them, so what is checked is what is
timed. How a backend is called is backend_base.Backend's contract; the backends themselves are in torch_backends.py
and onnx_backends.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .artifacts import AOTI_CPU, AOTI_CUDA, EXPORTED_PROGRAM, FILES, INT8, ONNX, OPTIONAL, TORCHSCRIPT
from .backend_base import Backend, BackendUnavailable, target_device
from .device import TORCH_VARIANTS, TorchVariant
from .errors import UserError
from .onnx_backends import openvino_backend, ort_backend
from .torch_backends import (aoti_backend, compiled_backend, eager_backend, exported_program_backend,
                             torchscript_backend)


@dataclass(frozen=True)
class BackendSpec:
    """One backend of the registry: its unique name, the device type it runs on, the precision it computes in,
    the artifact kind it loads from the exports folder (None: it runs the checkpoint's network itself), and how to
    build it from (the fp32 network from the checkpoint, the exports folder)."""

    name: str
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32" | "bf16" | "fp16" | "int8"
    build: Callable[[nn.Module, Path], Backend]
    artifact: str | None = None


def _cpu_threads(device: str) -> int:
    """ONNX Runtime's intra-op threads: as many as torch uses on the CPU (like compared with like), its own
    default (0) on a GPU."""
    return torch.get_num_threads() if device == "cpu" else 0


def _ort_spec(name: str, kind: str, device: str, precision: str) -> BackendSpec:
    return BackendSpec(name, device, precision, artifact=kind, build=lambda model, exports: ort_backend(
        exports / FILES[kind], device, name=name, intra_op_threads=_cpu_threads(device)))


def _openvino_spec(precision: str) -> BackendSpec:
    kind = INT8 if precision == "int8" else ONNX
    return BackendSpec(f"openvino-{precision}", "cpu", precision, artifact=kind,
                       build=lambda model, exports: openvino_backend(exports / FILES[kind], precision))


def _optional_artifact(exports: Path, kind: str) -> Path:
    """The path of an OPTIONAL artifact; BackendUnavailable when the export did not write it."""
    path = exports / FILES[kind]
    if not path.is_file():
        raise BackendUnavailable(f"{exports} has no {FILES[kind]}: it is written only by an export on a machine "
                                 f"with a CUDA GPU (`python -m alexnet_perf.export` there)")
    return path


def _aoti_spec(kind: str, device: str) -> BackendSpec:
    """The AOTInductor package for device; the optional one is checked for after the device is."""
    def build(model: nn.Module, exports: Path) -> Backend:
        where = target_device(device)  # no GPU is the reason to give, before a missing optional file
        return aoti_backend(_optional_artifact(exports, kind) if kind in OPTIONAL else exports / FILES[kind], where)

    return BackendSpec(kind, device, "fp32", build, artifact=kind)


def _torch_specs(device: str) -> list[BackendSpec]:
    """PyTorch on device: eager fp32 (parity's reference), eager and compiled bf16 + channels-last, and on a GPU
    the compiled one again with CUDA graphs."""
    suffix = "-cuda" if device == "cuda" else ""

    def spec(variant: TorchVariant) -> BackendSpec:
        precision = "bf16" if variant.amp else "fp32"
        make = compiled_backend if variant.compiled else eager_backend
        return BackendSpec(variant.name(precision) + suffix, device, precision, lambda m, e: make(
            m, device, precision=precision, channels_last=variant.channels_last))

    specs = [spec(variant) for variant in TORCH_VARIANTS]
    if device == "cuda":
        specs.append(BackendSpec("cuda-graphs-bf16-channels-last-cuda", device, "bf16", lambda m, e: compiled_backend(
            m, device, precision="bf16", channels_last=True, cuda_graphs=True)))
    return specs


BACKENDS: tuple[BackendSpec, ...] = (
    *_torch_specs("cpu"),
    BackendSpec("torchscript", "cpu", "fp32", lambda m, e: torchscript_backend(e / FILES[TORCHSCRIPT]),
                artifact=TORCHSCRIPT),
    BackendSpec("torch.export", "cpu", "fp32", lambda m, e: exported_program_backend(e / FILES[EXPORTED_PROGRAM]),
                artifact=EXPORTED_PROGRAM),
    _aoti_spec(AOTI_CPU, "cpu"),
    _ort_spec("onnxruntime-cpu", ONNX, "cpu", "fp32"),
    _ort_spec("onnxruntime-int8", INT8, "cpu", "int8"),
    *(_openvino_spec(precision) for precision in ("fp32", "bf16", "int8")),
    *_torch_specs("cuda"),
    _aoti_spec(AOTI_CUDA, "cuda"),
    _ort_spec("onnxruntime-cuda", ONNX, "cuda", "fp32"),
)
# Per device type, PyTorch eager fp32: the benchmarks' speed-up baseline, and on the CPU parity's reference.
REFERENCE = {"cpu": "eager-fp32", "cuda": "eager-fp32-cuda"}


def backend_specs(device: str | None = None) -> list[BackendSpec]:
    """Every backend of the registry, or only those of one device type (cpu, cuda)."""
    if device is not None and device not in REFERENCE:
        raise UserError(f"backends run on {' or '.join(REFERENCE)}, not {device!r}")
    return [spec for spec in BACKENDS if device is None or spec.device == device]


def backend_spec(name: str) -> BackendSpec:
    """The registry's backend of that name; a UserError naming the choices for an unknown one."""
    for spec in BACKENDS:
        if spec.name == name:
            return spec
    raise UserError(f"unknown backend {name!r} (choose from {', '.join(spec.name for spec in BACKENDS)})")


def create_backend(name: str, model: nn.Module, exports: str | Path) -> Backend:
    """Build the named backend from the checkpoint's fp32 network and the exports folder.

    UserError for an unknown name or a missing or damaged artifact; BackendUnavailable when it cannot run here."""
    return backend_spec(name).build(model, Path(exports))
