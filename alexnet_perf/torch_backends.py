"""The PyTorch backends: eager and torch.compile'd on the checkpoint's network, and the exported TorchScript,
torch.export and AOTInductor files.

fp32 means fp32 on GPUs too: the fp32 PyTorch backends run with TF32 off (exact_fp32), as the ONNX Runtime CUDA
sessions do.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .artifacts import load_artifact, torchscript_deprecation_silenced
from .backend_base import Backend, BackendUnavailable, target_device
from .device import AUTOCAST_DTYPES, TorchVariant, autocast, native_bf16
from .errors import UserError
from .isa_probe import remember_vec_isa_checks


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
    without autograd, under autocast to precision (bf16, fp16), or in fp32 with TF32 off."""

    def __init__(self, name: str, module: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 precision: str = "fp32", channels_last: bool = False) -> None:
        self.name, self.module, self.device = name, module, device
        self.precision, self.channels_last = precision, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        exact = exact_fp32(self.device) if self.precision == "fp32" else contextlib.nullcontext()
        with torch.inference_mode(), autocast(self.device, self.precision), exact:
            return self.module(x).float()


def _prepared(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """A copy of model in eval mode on device (the caller's model is left as it is)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return copy.deepcopy(model).eval().to(device, memory_format=memory_format)


def check_precision(precision: str, device: torch.device) -> None:
    """UserError for a precision PyTorch backends do not run in; BackendUnavailable for bf16 on a GPU or CPU that
    only emulates it (slower than fp32 there: 3–6× for inference on two AVX2 cores), as OpenVINO refuses it too."""
    if precision not in AUTOCAST_DTYPES:
        raise UserError(f"PyTorch backends run in {', '.join(AUTOCAST_DTYPES)}, not {precision!r}")
    if precision == "bf16" and not native_bf16(device):
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
            "this CPU (without AVX-512 BF16, AMX or Arm BF16)"
        raise BackendUnavailable(f"{where} has no native bf16 (only emulated)")


def _torch_name(compiled: bool, precision: str, channels_last: bool, device: torch.device,
                cuda_graphs: bool = False) -> str:
    """The variant's name (e.g. eager-fp32, compiled-bf16-channels-last, cuda-graphs-bf16-channels-last), with
    "-cuda" appended on a GPU."""
    name = TorchVariant(compiled, precision != "fp32", channels_last).name(precision)
    return (name.replace("compiled", "cuda-graphs", 1) if cuda_graphs else name) + \
        ("-cuda" if device.type == "cuda" else "")


def eager_backend(model: nn.Module, device: torch.device | str = "cpu", *, precision: str = "fp32",
                  channels_last: bool = False) -> TorchBackend:
    """PyTorch eager; precision: fp32, or bf16/fp16 autocast; channels_last: NHWC weights and inputs."""
    device = target_device(device)
    check_precision(precision, device)
    return TorchBackend(_torch_name(False, precision, channels_last, device),
                        _prepared(model, device, channels_last), device, precision, channels_last)


def compiled_backend(model: nn.Module, device: torch.device | str = "cpu", *, precision: str = "fp32",
                     channels_last: bool = False, cuda_graphs: bool = False) -> TorchBackend:
    """torch.compile'd eager (mode reduce-overhead, which records CUDA graphs, with cuda_graphs); compilation
    happens on the first call of each shape."""
    device = target_device(device)
    check_precision(precision, device)
    remember_vec_isa_checks()
    module = torch.compile(_prepared(model, device, channels_last), mode="reduce-overhead" if cuda_graphs else None)
    return TorchBackend(_torch_name(True, precision, channels_last, device, cuda_graphs), module, device, precision,
                        channels_last)


def torchscript_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The frozen TorchScript file written by export (torch.jit.load), passed through
    torch.jit.optimize_for_inference (on the CPU its convolutions then run on oneDNN's blocked layout, markedly
    faster)."""
    device = target_device(device)
    with torchscript_deprecation_silenced():
        module = load_artifact(path, lambda p: torch.jit.load(p, map_location=device))
        module = torch.jit.optimize_for_inference(module)
    return TorchBackend("torchscript" + ("-cuda" if device.type == "cuda" else ""), module, device)


def exported_program_backend(path: str | Path, device: torch.device | str = "cpu") -> TorchBackend:
    """The torch.export program (.pt2) written by export (torch.export.load), moved to device."""
    device = target_device(device)
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

    device = target_device(device)
    index = device.index if device.type == "cuda" else -1
    compiled = load_artifact(path, lambda p: aoti_load_package(p, device_index=index))
    return AotiBackend(f"aoti-{device.type}", compiled, device)
