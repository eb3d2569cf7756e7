"""Inference backends: the one place where every runtime the network is served with is created and called.

Every backend is called the same way: `backend(x)` with x a normalised float32 batch (N, 3, 32, 32) already on
`backend.device` (see data.normalize), returning float32 logits (N, classes) on that device. Parity and the
benchmarks both build their backends here, so what is checked is what is timed.

Backends that cannot run on this machine (ONNX Runtime's CUDA provider without a GPU, or with a build that has no
CUDA provider) raise BackendUnavailable with the reason; callers record or print it as a skip.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .runtime import amp_dtype, autocast

INPUT_SHAPE = (3, 32, 32)
INPUT_NAME, OUTPUT_NAME = "input", "logits"  # the ONNX graph's input and output names
TORCHSCRIPT_FILE = "alexnet_cifar.ts.pt"
ONNX_FILE = "alexnet_cifar.onnx"
INT8_ONNX_FILE = "alexnet_cifar.int8.onnx"
EXPORTED_PROGRAM_FILE = "alexnet_cifar.pt2"
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


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


_PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _torch_name(kind: str, precision: torch.dtype | None, channels_last: bool) -> str:
    return f"{kind}-{_PRECISION_NAMES[precision]}" + ("-channels-last" if channels_last else "")


def eager_backend(model: nn.Module, device: torch.device | str = "cpu", *, amp: bool = False,
                  channels_last: bool = False) -> TorchBackend:
    """PyTorch eager; amp: bf16 autocast (fp16 on GPUs without bf16); channels_last: NHWC weights and inputs."""
    device = _device(device)
    precision = amp_dtype(device, amp)
    return TorchBackend(_torch_name("eager", precision, channels_last), _prepared(model, device, channels_last),
                        device, precision, channels_last)


def compiled_backend(model: nn.Module, device: torch.device | str = "cpu", *, amp: bool = False,
                     channels_last: bool = False, mode: str | None = None) -> TorchBackend:
    """torch.compile'd eager (mode as torch.compile's); compilation happens on the first call of each shape."""
    device = _device(device)
    precision = amp_dtype(device, amp)
    module = torch.compile(_prepared(model, device, channels_last), mode=mode)
    return TorchBackend(_torch_name("compiled", precision, channels_last), module, device, precision, channels_last)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported model not found: {path} (write it with `python -m alexnet_perf.export`)")
    return path


@contextlib.contextmanager
def torchscript_deprecation_silenced():
    """TorchScript is deprecated upstream (torch.export is its successor, also exported); it is still shipped for
    runtimes that only load TorchScript, so its FutureWarnings are silenced where this package uses it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def torchscript_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The frozen TorchScript file written by export (torch.jit.load)."""
    device = _device(device)
    with torchscript_deprecation_silenced():
        module = torch.jit.load(str(_existing(path)), map_location=device)
    return TorchBackend("torchscript", module, device)


def exported_program_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The torch.export program (.pt2) written by export (torch.export.load), moved to device."""
    device = _device(device)
    program = torch.export.load(str(_existing(path)))
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return TorchBackend("torch.export", program.module(), device)


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
    session = ort.InferenceSession(str(_existing(path)), options, providers=providers)
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
