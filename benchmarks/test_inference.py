"""Inference latency of every backend of the registry at batch sizes 1, 128 and 1024: ms per sample and samples/s
in extra_info.

The cases are alexnet_perf.backends' registry (backend_specs), the same backends parity checks, each built by
create_backend with its defaults (which the tuning kept: benchmarks/RESULTS.md, "Tuning notes"; ONNX Runtime and
OpenVINO on the CPU get as many threads as torch uses) and fed a normalised float32 NCHW batch already on its
device; a timed call ends when the logits are ready (CUDA calls synchronise). Cases that cannot run here (no GPU, no
CUDA provider, no AOTInductor package for CUDA in the set, no OpenVINO) are skipped with the backend's own reason.
With --gpu-stand-in each CUDA backend is rehearsed by its CPU counterpart (stand_in), under the CUDA backend's name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from alexnet_perf.artifacts import INPUT_SHAPE
from alexnet_perf.backend_base import BackendUnavailable
from alexnet_perf.backends import REFERENCE, BackendSpec, backend_spec, backend_specs
from alexnet_perf.device import synchronize

BATCH_SIZES = (1, 128, 1024)
STAND_INS = {"aoti-cuda": "aoti-cpu", "onnxruntime-cuda": "onnxruntime-cpu"}  # others: the name without -cuda


def stand_in(spec: BackendSpec) -> BackendSpec:
    """The CPU backend that rehearses a CUDA one: same runtime and precision (CUDA graphs, which a CPU lacks, by
    the compiled backend they wrap)."""
    return backend_spec(STAND_INS.get(spec.name, spec.name.removesuffix("-cuda").replace("cuda-graphs-", "compiled-")))


def _exports(spec: BackendSpec, request: pytest.FixtureRequest) -> Path:
    """The artifact folder for a backend that loads one; the export is made only for such backends (for the GPU
    cases, only the files they load)."""
    if not spec.artifact:
        return Path()
    return Path(request.getfixturevalue("gpu_artifacts" if spec.device == "cuda" else "artifacts").folder)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("spec", [pytest.param(s, id=s.name, marks=[pytest.mark.gpu] if s.device == "cuda" else [])
                                  for s in backend_specs()])
def test_inference(measure, make_batch, compiled_graphs, request: pytest.FixtureRequest, model: nn.Module,
                   spec: BackendSpec, batch_size: int) -> None:
    compiled_graphs.prepare((batch_size, *INPUT_SHAPE))
    build = spec.build
    if spec.device == "cuda" and request.getfixturevalue("gpu_device").type == "cpu":
        build = stand_in(spec).build
    try:
        backend = build(model, _exports(spec, request))
    except BackendUnavailable as e:
        pytest.skip(str(e))
    x = make_batch(batch_size, backend.device)

    def run() -> None:
        backend(x)
        synchronize(backend.device)

    measure(run, kind="inference", batch_size=batch_size, backend=spec.name, device=backend.device,
            precision=spec.precision, threads=backend.host_threads(batch_size),
            reference=spec.name == REFERENCE[spec.device],
            tf32=False if backend.device.type == "cuda" and spec.precision == "fp32" else None)  # exact_fp32
