"""Inference latency of every backend at batch sizes 1, 128 and 1024: ms per sample and samples/s in extra_info.

Each backend is built by alexnet_perf.backends (what parity checks is what is timed) and fed a normalised float32
NCHW batch already on its device; a timed call ends when the logits are ready (CUDA calls synchronise). Cases that
cannot run here (no GPU, no CUDA provider) are skipped with the backend's own reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

from alexnet_perf.backends import (EXPORTED_PROGRAM_FILE, INT8_ONNX_FILE, ONNX_FILE, TORCHSCRIPT_FILE, Backend,
                                   BackendUnavailable, compiled_backend, eager_backend, exported_program_backend,
                                   ort_backend, torchscript_backend)
from alexnet_perf.runtime import synchronize

BATCH_SIZES = (1, 128, 1024)
# Backends run with backends.py's defaults, which the tuning kept (benchmarks/RESULTS.md, "Tuning notes"): every
# ONNX Runtime graph optimisation, torch.compile's default mode. ONNX Runtime gets as many intra-op threads as torch
# uses, so that the CPU figures compare like with like.


@dataclass(frozen=True)
class Spec:
    """One benchmarked backend: a test id, its device, how to build it from (model, artifacts folder), the
    precision when it is not PyTorch's own (ONNX files), and a suffix telling apart variants of one backend."""

    id: str
    device: str
    build: Callable[[nn.Module, Callable[[], Path]], Backend]
    dtype: str | None = None
    suffix: str = ""


def _ort(file: str, device: str, name: str | None = None) -> Callable[[nn.Module, Callable[[], Path]], Backend]:
    threads = torch.get_num_threads() if device == "cpu" else 0
    return lambda model, folder: ort_backend(folder() / file, device, name=name, intra_op_threads=threads)


SPECS = {spec.id: spec for spec in [
    Spec("eager-fp32-cpu", "cpu", lambda m, f: eager_backend(m, "cpu")),
    Spec("eager-bf16-channels-last-cpu", "cpu", lambda m, f: eager_backend(m, "cpu", amp=True, channels_last=True)),
    Spec("compiled-bf16-channels-last-cpu", "cpu",
         lambda m, f: compiled_backend(m, "cpu", amp=True, channels_last=True)),
    Spec("torchscript-cpu", "cpu", lambda m, f: torchscript_backend(f() / TORCHSCRIPT_FILE, "cpu")),
    Spec("torch.export-cpu", "cpu", lambda m, f: exported_program_backend(f() / EXPORTED_PROGRAM_FILE, "cpu")),
    Spec("onnxruntime-cpu", "cpu", _ort(ONNX_FILE, "cpu"), dtype="float32"),
    Spec("onnxruntime-int8-cpu", "cpu", _ort(INT8_ONNX_FILE, "cpu", name="onnxruntime-int8"), dtype="int8"),
    Spec("onnxruntime-cuda", "cuda", _ort(ONNX_FILE, "cuda"), dtype="float32"),
    Spec("eager-fp32-cuda", "cuda", lambda m, f: eager_backend(m, "cuda")),
    Spec("eager-amp-channels-last-cuda", "cuda", lambda m, f: eager_backend(m, "cuda", amp=True, channels_last=True)),
    Spec("compiled-amp-channels-last-cuda", "cuda",
         lambda m, f: compiled_backend(m, "cuda", amp=True, channels_last=True)),
    Spec("cuda-graph-amp-channels-last-cuda", "cuda",
         lambda m, f: compiled_backend(m, "cuda", amp=True, channels_last=True, mode="reduce-overhead"),
         suffix=" (CUDA graphs)"),
]}


def _dtype(spec: Spec, backend: Backend) -> str:
    """The precision the backend computes in (autocast's pick on this device for the amp ones)."""
    return spec.dtype or str(getattr(backend, "precision", None) or torch.float32).removeprefix("torch.")


def _threads(backend: Backend) -> int | None:
    """Host threads doing the work on a CPU backend (None on a GPU)."""
    if backend.device.type != "cpu":
        return None
    session = getattr(backend, "session", None)
    return session.get_session_options().intra_op_num_threads if session is not None else torch.get_num_threads()


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("backend_id", [pytest.param(s.id, marks=[pytest.mark.gpu] if s.device == "cuda" else [])
                                        for s in SPECS.values()])
def test_inference(measure, make_batch, request: pytest.FixtureRequest, model: nn.Module, backend_id: str,
                   batch_size: int) -> None:
    spec = SPECS[backend_id]
    torch.compiler.reset()  # each compiled case compiles its own static-shape graph
    try:
        backend = spec.build(model, lambda: request.getfixturevalue("artifacts").folder)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    x = make_batch(batch_size, backend.device)

    def run() -> None:
        backend(x)
        synchronize(backend.device)

    measure(run, kind="inference", batch_size=batch_size, backend=backend.name + spec.suffix, device=backend.device,
            dtype=_dtype(spec, backend), threads=_threads(backend))
