"""What every inference backend is: a callable taking a normalised float32 batch (N, 3, 32, 32) already on
`backend.device` (see data.normalize) and returning float32 logits (N, classes) on that device.

Backends that cannot run on this machine (no GPU, a build of ONNX Runtime without its CUDA provider, a GPU or CPU
without bf16, OpenVINO not installed, an optional artifact the export did not write) raise BackendUnavailable with
the reason; callers record or print it as a skip. A missing or damaged exported file is a UserError naming it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .artifacts import INPUT_SHAPE
from .errors import UserError

WARMUP_CALLS = 2  # calls before a backend runs at its steady speed: torch.compile compiles in the first call, and
# with CUDA graphs (mode reduce-overhead) runs that first call unrecorded, records on the second, replays from the third


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

    def host_threads(self, batch_size: int) -> int | None:
        """Host threads doing the work on a CPU backend for a batch of batch_size (None on a GPU): torch's, unless
        the runtime has its own."""
        return torch.get_num_threads() if self.device.type == "cpu" else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}>"


def check_input(x: object, name: str, device: torch.device) -> None:
    """UserError naming the expected input unless x is a float32 (N, 3, 32, 32) tensor on device. It runs on every
    call, so the message is formatted only on a failure (formatting it every time cost 1–3 µs of a 75-µs batch-1
    call)."""
    if not isinstance(x, torch.Tensor):
        raise UserError(_input_error(name, device, type(x).__name__))
    if x.dtype is not torch.float32 or x.dim() != 4 or x.shape[1:] != INPUT_SHAPE or x.shape[0] < 1:
        raise UserError(_input_error(name, device, f"{str(x.dtype).removeprefix('torch.')} of shape {tuple(x.shape)}"))
    if x.device != device:
        raise UserError(_input_error(name, device, f"a tensor on {x.device}"))


def _input_error(name: str, device: torch.device, got: str) -> str:
    return (f"{name} expects a float32 torch.Tensor of shape (N, 3, 32, 32) on {device}: CIFAR-10 images scaled to "
            f"[0, 1] and standardised with data.MEAN/STD (alexnet_perf.data.normalize); got {got}")


def target_device(device: torch.device | str) -> torch.device:
    """The device a backend runs on (a cuda device gets its index); BackendUnavailable for a GPU not present."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device} asked for, but torch sees no CUDA GPU here")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device
