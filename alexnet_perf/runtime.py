"""Device, precision and seeding choices shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from .errors import UserError


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


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast precision: bf16 on CPUs and on GPUs that support it, fp16 (with a GradScaler) on older GPUs."""
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast when dtype is set, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
