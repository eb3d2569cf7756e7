"""Inference backends: the one place where every runtime the network is served with is created and called.

BACKENDS (through backend_specs and create_backend) is the registry of every backend by name: parity checks each
one against the checkpoint, the benchmark suite times each one, and `predict` serves with any of them, so what is
checked is what is timed. Every backend is called the same way: `backend(x)` with x a normalised float32 batch
(N, 3, 32, 32) already on `backend.device` (see data.normalize), returning float32 logits (N, classes) on that
device.

Backends that cannot run on this machine (no GPU, a build of ONNX Runtime without its CUDA provider, a GPU or CPU
without bf16, OpenVINO not installed, an optional artifact the export did not write) raise BackendUnavailable with
the reason; callers record or print it as a skip. A missing or damaged exported file is a UserError naming it.

fp32 means fp32 on GPUs too: the fp32 PyTorch backends run with TF32 off (exact_fp32), as the ONNX Runtime CUDA
sessions do.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .artifacts import (AOTI_CPU, AOTI_CUDA, EXPORTED_PROGRAM, FILES, INPUT_NAME, INPUT_SHAPE, INT8, ONNX, OPTIONAL,
                        OUTPUT_NAME, TORCHSCRIPT, check_external_data, existing_artifact,
                        torchscript_deprecation_silenced)
from .errors import UserError
from .device import autocast, cuda_has_bf16

WARMUP_CALLS = 2  # calls before a backend runs at its steady speed: torch.compile compiles in the first call, and
# with CUDA graphs (mode reduce-overhead) runs that first call unrecorded, records on the second, replays from the third
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # PyTorch backends' autocast dtypes
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT: int8 models keep
# their unquantised operations in f32
OPENVINO_PERFORMANCE_HINT = "LATENCY"  # one stream: faster than THROUGHPUT at batch 1 and 128 with one request at a
# time, equal at 1024 (exports/README.md)


class BackendUnavailable(UserError):
    """This backend cannot run here (no GPU, no provider); the message says why. Callers turn it into a skip."""


class Backend(ABC):
    """A callable inference runtime: normalised float32 (N, 3, 32, 32) on self.device → float32 logits there."""

    name: str
    device: torch.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.name, self.device)
        return self.forward(x)

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run a validated batch."""

    def host_threads(self) -> int | None:
        """Host threads doing the work on a CPU backend (None on a GPU): torch's, unless the runtime has its own."""
        return torch.get_num_threads() if self.device.type == "cpu" else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}>"


def check_input(x: object, name: str, device: torch.device) -> None:
    """UserError naming the expected input unless x is a float32 (N, 3, 32, 32) tensor on device."""
    expected = (f"{name} expects a float32 torch.Tensor of shape (N, 3, 32, 32) on {device}: CIFAR-10 images "
                f"scaled to [0, 1] and standardised with data.MEAN/STD (alexnet_perf.data.normalize)")
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{expected}; got {type(x).__name__}")
    if x.dtype != torch.float32 or x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE or x.shape[0] < 1:
        raise UserError(f"{expected}; got {str(x.dtype).removeprefix('torch.')} of shape {tuple(x.shape)}")
    if x.device != device:
        raise UserError(f"{expected}; got a tensor on {x.device}")


def _device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device} asked for, but torch sees no CUDA GPU here")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


# --- PyTorch -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """On a GPU, TF32 off for cuDNN convolutions and cuBLAS matmuls (cuDNN's default is on, which breaks fp32's
    1e-4 tolerance) for the duration, restored afterwards; nothing on the CPU."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


class TorchBackend(Backend):
    """A PyTorch callable (eager or compiled module, TorchScript, torch.export module, AOTInductor package) run
    without autograd; in fp32 (precision None) with TF32 off."""

    def __init__(self, name: str, module: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 precision: torch.dtype | None = None, channels_last: bool = False) -> None:
        self.name, self.module, self.device = name, module, device
        self.precision, self.channels_last = precision, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        exact = exact_fp32(self.device) if self.precision is None else contextlib.nullcontext()
        with torch.inference_mode(), autocast(self.device, self.precision), exact:
            return self.module(x).float()


def _prepared(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """A copy of model in eval mode on device (the caller's model is left as it is)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return copy.deepcopy(model).eval().to(device, memory_format=memory_format)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision name; BackendUnavailable for bf16 on a GPU without it."""
    if precision not in PRECISIONS:
        raise UserError(f"PyTorch backends run in {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not cuda_has_bf16():
        raise BackendUnavailable(f"{torch.cuda.get_device_name(device)} has no native bf16 (only emulated)")
    return PRECISIONS[precision]


def _torch_name(kind: str, precision: str, channels_last: bool, device: torch.device) -> str:
    """e.g. eager-fp32, compiled-bf16-channels-last; "-cuda" appended on a GPU."""
    return (f"{kind}-{precision}" + ("-channels-last" if channels_last else "")
            + ("-cuda" if device.type == "cuda" else ""))


def eager_backend(model: nn.Module, device: torch.device | str = "cpu", *, precision: str = "fp32",
                  channels_last: bool = False) -> TorchBackend:
    """PyTorch eager; precision: fp32, or bf16/fp16 autocast; channels_last: NHWC weights and inputs."""
    device = _device(device)
    dtype = _autocast_dtype(precision, device)
    return TorchBackend(_torch_name("eager", precision, channels_last, device),
                        _prepared(model, device, channels_last), device, dtype, channels_last)


def compiled_backend(model: nn.Module, device: torch.device | str = "cpu", *, precision: str = "fp32",
                     channels_last: bool = False, cuda_graphs: bool = False) -> TorchBackend:
    """torch.compile'd eager (mode reduce-overhead, which records CUDA graphs, with cuda_graphs); compilation
    happens on the first call of each shape."""
    device = _device(device)
    dtype = _autocast_dtype(precision, device)
    module = torch.compile(_prepared(model, device, channels_last), mode="reduce-overhead" if cuda_graphs else None)
    return TorchBackend(_torch_name("cuda-graphs" if cuda_graphs else "compiled", precision, channels_last, device),
                        module, device, dtype, channels_last)


def error_reason(error: BaseException) -> str:
    """The line of an exception's message that says what went wrong: runtimes prefix it with source locations
    (OpenVINO: `Exception from src/inference/src/cpp/core.cpp:84:`, then `Check '...' failed at ...:`), which
    are skipped; a line ending in a colon gets the line after it."""
    location = re.compile(r"^(Exception from |Check .* failed at )?\S+\.(cpp|cc|h|hpp|c):\d+:?$")
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not location.match(ln)] or lines
    if not lines:
        return type(error).__name__
    reason = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")
    return reason[:300]


@contextlib.contextmanager
def runtime_output_held() -> Iterator[None]:
    """Hold what the runtimes print while an artifact loads: Python log records (torch.export logs a whole
    traceback before raising on a damaged .pt2) are dropped, and what native code writes to stderr (OpenVINO's
    frontends log each parser they try on a damaged file) is kept back, then shown if the load succeeds and dropped
    if it fails, where the one-line UserError that follows says what went wrong."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                if not failed:
                    held.seek(0)
                    os.write(2, held.read())
    finally:
        os.close(saved)
        logging.disable(previous)


def load_artifact(path: str | Path, load: Callable[[str], Any]) -> Any:
    """load(path) for an exported file; a missing one, an ONNX file whose external data lies outside its folder,
    or one its runtime cannot read, is a UserError naming it.

    The runtimes raise whatever their parsers meet in a damaged file (RuntimeError, protobuf and zip errors, ONNX
    Runtime's own classes), so any exception of the load itself is taken as a damaged file."""
    path = existing_artifact(path)
    if path.suffix == ".onnx":
        check_external_data(path)
    try:
        with runtime_output_held():
            return load(str(path))
    except Exception as e:
        raise UserError(f"{path}: damaged or not loadable ({error_reason(e)})") from None


def torchscript_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The frozen TorchScript file written by export (torch.jit.load), passed through
    torch.jit.optimize_for_inference (on the CPU its convolutions then run on oneDNN's blocked layout, markedly
    faster)."""
    device = _device(device)
    with torchscript_deprecation_silenced():
        module = load_artifact(path, lambda p: torch.jit.load(p, map_location=device))
        module = torch.jit.optimize_for_inference(module)
    return TorchBackend("torchscript" + ("-cuda" if device.type == "cuda" else ""), module, device)


def exported_program_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The torch.export program (.pt2) written by export (torch.export.load), moved to device."""
    device = _device(device)
    program = load_artifact(path, torch.export.load)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return TorchBackend("torch.export" + ("-cuda" if device.type == "cuda" else ""), program.module(), device)


class AotiBackend(TorchBackend):
    """An AOTInductor package: compiled for contiguous inputs, it reads any other layout as if it were contiguous
    (wrong logits, no error), so every input is made contiguous first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous())


def aoti_backend(path: str | Path, device: torch.device | str = "cpu") -> AotiBackend:
    """An AOTInductor package written by export (torch._inductor.aoti_load_package), compiled for device's type."""
    from torch._inductor import aoti_load_package

    device = _device(device)
    index = device.index if device.type == "cuda" else -1
    compiled = load_artifact(path, lambda p: aoti_load_package(p, device_index=index))
    return AotiBackend(f"aoti-{device.type}", compiled, device)


# --- ONNX Runtime --------------------------------------------------------------------------------------------

def ort_session(path: str | Path, device: torch.device | str = "cpu", *, graph_optimization: str = "all",
                intra_op_threads: int = 0, inter_op_threads: int = 0):
    """The one place ONNX Runtime sessions are made: CPU provider, or the CUDA provider on a cuda device.

    graph_optimization: disable|basic|extended|all; thread counts 0 = ONNX Runtime's default. On CUDA, TF32 is off
    (fp32 means fp32), and the session is refused with BackendUnavailable unless the CUDA provider really is its
    first provider (ONNX Runtime would otherwise fall back to the CPU without a word).
    """
    import onnxruntime as ort

    device = _device(device)
    if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
        raise UserError(f"graph optimisation must be one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}, "
                        f"got {graph_optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, "ORT_DISABLE_ALL" if graph_optimization == "disable"
        else f"ORT_ENABLE_{graph_optimization.upper()}")
    options.intra_op_num_threads, options.inter_op_num_threads = intra_op_threads, inter_op_threads
    if device.type == "cpu":
        providers: list = ["CPUExecutionProvider"]
    elif device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                                     f"(install onnxruntime-gpu)")
        providers = [("CUDAExecutionProvider", {"device_id": device.index, "use_tf32": 0})]
    else:
        raise UserError(f"ONNX Runtime backends run on cpu or cuda, not {device}")
    session = load_artifact(path, lambda p: ort.InferenceSession(p, options, providers=providers))
    if device.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise BackendUnavailable(f"ONNX Runtime could not start its CUDA provider (session providers: "
                                 f"{session.get_providers()}; see its log above for the missing library)")
    return session


class OrtBackend(Backend):
    """An ONNX Runtime session; on CUDA, inputs and outputs stay on the GPU through IOBinding (ONNX Runtime runs on
    its own stream, so torch's stream is synchronised before the run and ONNX Runtime's after it)."""

    def __init__(self, name: str, session, device: torch.device) -> None:
        self.name, self.session, self.device = name, session, device
        self.num_classes = int(session.get_outputs()[0].shape[1])

    def host_threads(self) -> int | None:
        return self.session.get_session_options().intra_op_num_threads if self.device.type == "cpu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if self.device.type == "cpu":
            return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        logits = torch.empty((x.shape[0], self.num_classes), dtype=torch.float32, device=self.device)
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", self.device.index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", self.device.index, np.float32, tuple(logits.shape),
                            logits.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # x is written on torch's stream, read on ORT's
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return logits


def ort_backend(path: str | Path, device: torch.device | str = "cpu", *, name: str | None = None,
                graph_optimization: str = "all", intra_op_threads: int = 0, inter_op_threads: int = 0) -> OrtBackend:
    """An ONNX file (fp32 or the INT8 one) under ONNX Runtime; name defaults to onnxruntime-<device type>."""
    device = _device(device)
    session = ort_session(path, device, graph_optimization=graph_optimization, intra_op_threads=intra_op_threads,
                          inter_op_threads=inter_op_threads)
    return OrtBackend(name or f"onnxruntime-{device.type}", session, device)


# --- OpenVINO -------------------------------------------------------------------------------------------------

def _openvino():
    """The openvino module; BackendUnavailable with the reason when it cannot be imported."""
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailable(f"OpenVINO is not importable here ({e}; pip install openvino)") from None
    return openvino


def openvino_config(precision: str, threads: int) -> dict[str, Any]:
    """compile_model's CPU configuration: the precision's inference precision hint (set explicitly: OpenVINO's
    default on a CPU with bf16 is bf16), the latency hint and threads host threads."""
    if precision not in OPENVINO_PRECISIONS:
        raise UserError(f"OpenVINO backends run in {', '.join(OPENVINO_PRECISIONS)}, not {precision!r}")
    return {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "PERFORMANCE_HINT": OPENVINO_PERFORMANCE_HINT, "INFERENCE_NUM_THREADS": threads}


def _check_openvino_precision(core: Any, compiled: Any, precision: str) -> None:
    """BackendUnavailable when this CPU cannot run the precision (OpenVINO would silently fall back to f32)."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    needed = {"bf16": "BF16", "int8": "INT8"}.get(precision)
    if needed and needed not in capabilities:
        raise BackendUnavailable(f"this CPU has no {needed} support in OpenVINO (capabilities: "
                                 f"{', '.join(capabilities)})")
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if used != OPENVINO_PRECISIONS[precision]:
        raise BackendUnavailable(f"OpenVINO compiled the {precision} model in {used} on this CPU")


class OpenVinoBackend(Backend):
    """An OpenVINO model compiled for the CPU, run through one reused infer request (one call at a time); the input
    is shared with OpenVINO, the output copied (OpenVINO reuses its buffers)."""

    def __init__(self, name: str, compiled: Any) -> None:
        self.name, self.compiled, self.device = name, compiled, torch.device("cpu")
        self.request = compiled.create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: x.contiguous().numpy()}, share_inputs=True)
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())

    def host_threads(self) -> int:
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))


def openvino_backend(path: str | Path, precision: str = "fp32") -> OpenVinoBackend:
    """openvino-<precision>: an ONNX file (the fp32 one, or the QDQ INT8 one for precision int8) read and compiled
    by OpenVINO for the CPU with as many threads as torch uses (like compared with like)."""
    ov = _openvino()
    config = openvino_config(precision, torch.get_num_threads())
    core = ov.Core()
    compiled = load_artifact(path, lambda p: core.compile_model(core.read_model(p), "CPU", config))
    _check_openvino_precision(core, compiled, precision)
    return OpenVinoBackend(f"openvino-{precision}", compiled)


# --- the registry ---------------------------------------------------------------------------------------------

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
        where = _device(device)  # no GPU is the reason to give, before a missing optional file
        return aoti_backend(_optional_artifact(exports, kind) if kind in OPTIONAL else exports / FILES[kind], where)

    return BackendSpec(kind, device, "fp32", build, artifact=kind)


def _torch_specs(device: str) -> list[BackendSpec]:
    """PyTorch on device: eager fp32 (parity's reference), eager and compiled bf16 + channels-last, and on a GPU
    the compiled one again with CUDA graphs."""
    suffix = "-cuda" if device == "cuda" else ""
    specs = [
        BackendSpec(f"eager-fp32{suffix}", device, "fp32", lambda m, e: eager_backend(m, device)),
        BackendSpec(f"eager-bf16-channels-last{suffix}", device, "bf16",
                    lambda m, e: eager_backend(m, device, precision="bf16", channels_last=True)),
        BackendSpec(f"compiled-bf16-channels-last{suffix}", device, "bf16",
                    lambda m, e: compiled_backend(m, device, precision="bf16", channels_last=True)),
    ]
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
