"""Inference backends: the one place where every runtime the network is served with is created and called.

BACKENDS (through backend_specs and create_backend) is the registry of every backend by name: parity checks each
one against the checkpoint, the benchmark suite times each one, and `predict` serves with any of them, so what is
checked is what is timed. Every backend is called the same way: `backend(x)` with x a normalised float32 batch
(N, 3, 32, 32) already on `backend.device` (see data.normalize), returning float32 logits (N, classes) on that
device.

Backends that cannot run on this machine (no GPU, a build of ONNX Runtime without its CUDA provider, a GPU without
bf16) raise BackendUnavailable with the reason; callers record or print it as a skip. A missing or damaged
exported file is a UserError naming it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .artifacts import (EXPORTED_PROGRAM, FILES, INPUT_NAME, INPUT_SHAPE, INT8, ONNX, OUTPUT_NAME, TORCHSCRIPT,
                        torchscript_deprecation_silenced)
from .errors import UserError
from .runtime import autocast

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # PyTorch backends' autocast dtypes


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

class TorchBackend(Backend):
    """A PyTorch callable (eager or compiled module, TorchScript, torch.export module) run without autograd."""

    def __init__(self, name: str, module: nn.Module, device: torch.device, precision: torch.dtype | None = None,
                 channels_last: bool = False) -> None:
        self.name, self.module, self.device = name, module, device
        self.precision, self.channels_last = precision, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.module(x).float()


def _prepared(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """A copy of model in eval mode on device (the caller's model is left as it is)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return copy.deepcopy(model).eval().to(device, memory_format=memory_format)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision name; BackendUnavailable for bf16 on a GPU without it."""
    if precision not in PRECISIONS:
        raise UserError(f"PyTorch backends run in {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BackendUnavailable(f"{torch.cuda.get_device_name(device)} has no bf16")
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


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported model not found: {path} (write it with `python -m alexnet_perf.export`)")
    return path


def _loaded(path: str | Path, load: Callable[[str], Any]) -> Any:
    """load(path) for an exported file; a missing one, or one its runtime cannot read, is a UserError naming it.

    The runtimes raise whatever their parsers meet in a damaged file (RuntimeError, protobuf and zip errors, ONNX
    Runtime's own classes), so any exception of the load itself is taken as a damaged file."""
    path = _existing(path)
    try:
        return load(str(path))
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: damaged or not loadable ({reason[:200]})") from None


def torchscript_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The frozen TorchScript file written by export (torch.jit.load)."""
    device = _device(device)
    with torchscript_deprecation_silenced():
        module = _loaded(path, lambda p: torch.jit.load(p, map_location=device))
    return TorchBackend("torchscript" + ("-cuda" if device.type == "cuda" else ""), module, device)


def exported_program_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The torch.export program (.pt2) written by export (torch.export.load), moved to device."""
    device = _device(device)
    program = _loaded(path, torch.export.load)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return TorchBackend("torch.export" + ("-cuda" if device.type == "cuda" else ""), program.module(), device)


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
    session = _loaded(path, lambda p: ort.InferenceSession(p, options, providers=providers))
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
    _ort_spec("onnxruntime-cpu", ONNX, "cpu", "fp32"),
    _ort_spec("onnxruntime-int8", INT8, "cpu", "int8"),
    *_torch_specs("cuda"),
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
