"""Exponential moving average of a model's weights (and BatchNorm statistics), updated every step.

For short runs the average of the last few hundred steps generalises better than the last step's weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """shadow ← decay · shadow + (1 − decay) · weights, for every parameter and float buffer of the model."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = [(s, t) for s, t in zip(self._tensors(self.model), self._tensors(model))]

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        shadow, live = zip(*self._pairs)
        torch._foreach_lerp_(list(shadow), list(live), 1.0 - self.decay)
