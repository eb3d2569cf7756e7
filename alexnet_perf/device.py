"""How the network runs, shared by training, evaluation, the backends and the benchmarks: the device, the precision
(one vocabulary everywhere: fp32, bf16, fp16, and int8 for the quantised backends), the PyTorch variants (eager or
compiled, precision, memory layout), seeding and TF32."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # precision → autocast dtype


@dataclass(frozen=True)
class TorchVariant:
    """How PyTorch runs the network: eager or torch.compile'd, fp32 or mixed precision (autocast), NCHW or
    channels-last. The training step benchmarks and the PyTorch inference backends use the same variants."""

    compiled: bool
    amp: bool
    channels_last: bool

    def name(self, precision: str) -> str:
        """e.g. eager-fp32, compiled-bf16-channels-last; precision: what amp runs in on the device."""
        return (("compiled" if self.compiled else "eager") + f"-{precision if self.amp else 'fp32'}"
                + ("-channels-last" if self.channels_last else ""))


TORCH_VARIANTS = (TorchVariant(compiled=False, amp=False, channels_last=False),  # the reference: eager fp32
                  TorchVariant(compiled=False, amp=True, channels_last=True),
                  TorchVariant(compiled=True, amp=True, channels_last=True))


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → cuda when a GPU is usable, else cpu; an unusable explicit choice is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA GPU is available here")
    return device


def cuda_has_bf16() -> bool:
    """Whether the current GPU computes bf16 natively (compute capability 8.0 and up). torch's default answer also
    counts bf16 emulated in fp32 as supported, which on older GPUs is slower than fp16 with a GradScaler."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def _on_x86() -> bool:
    """Whether this is an x86-64 machine, where torch.cpu's instruction-set checks apply."""
    return platform.machine().lower() in ("x86_64", "amd64")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively: AVX-512 BF16 or AMX on x86, the BF16 extension on Arm. Without it
    oneDNN emulates bf16 through fp32, several times slower than fp32 itself (10× for the training step on an AVX2
    CPU), and a CPU has no fast fp16 either."""
    if _on_x86():
        return torch.cpu._is_avx512_bf16_supported() or cpu_has_amx()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX matrix tiles (Intel Xeon since Sapphire Rapids), which oneDNN uses for bf16 and int8
    convolutions: their matrix rate is several times that of AVX-512 BF16, so figures with and without it differ."""
    return _on_x86() and torch.cpu._is_amx_tile_supported()


def native_bf16(device: torch.device) -> bool:
    """Whether device computes bf16 natively; where it only emulates it, bf16 is slower than fp32 (or fp16)."""
    return cuda_has_bf16() if device.type == "cuda" else cpu_has_bf16()


def amp_precision(device: torch.device, enabled: bool) -> str:
    """Mixed precision's pick when enabled: bf16 on CPUs and GPUs that compute it natively, fp16 (with a GradScaler)
    on older GPUs, fp32 on CPUs without bf16 (mixed precision would only slow them down); fp32 when not enabled."""
    if not enabled:
        return "fp32"
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def autocast(device: torch.device, precision: str):
    """torch.autocast to the precision's dtype, or a no-op context for fp32."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic != torch.are_deterministic_algorithms_enabled():  # the call imports inductor: ≈ 1 s
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 cuDNN convolutions and cuBLAS matmuls, process-wide. Set explicitly for every run: cuDNN's
    default is on, so an "fp32" GPU run would otherwise compute convolutions in TF32."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default every allocation over 32 MiB (a batch-512 activation) is a fresh mmap, and the kernel zero-fills its
    pages again at first touch on every training step: 10-27 % of a CPU step's CPU time goes to the kernel, more in
    fp32 than bf16, so the page faults both slow and skew step-throughput figures. Without mmap for large blocks and
    with trimming off, a step reuses the previous step's pages; the process keeps its peak heap until it exits.
    Returns False where there is no glibc mallopt (macOS, Windows, musl): nothing changes there."""
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h> parameter numbers
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1
