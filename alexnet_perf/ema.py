"""Averages of a model's weights (and BatchNorm statistics) over the steps of a run.

EMA: an exponential moving average updated every step, kept beside the weights (validated and saved in their place).
Lookahead: airbench's slow copy that the weights are pulled back to every few steps, averaging only near the end.
For short runs an average of the last few hundred steps generalises better than the last step's weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def float_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The model's parameters and floating-point buffers (BatchNorm statistics; not its integer step counts)."""
    return [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]


class EMA:
    """shadow ← decay · shadow + (1 − decay) · weights, for every parameter and float buffer of the model."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.shadow, self.live = float_tensors(self.model), float_tensors(model)

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, self.live, 1.0 - self.decay)


class Lookahead:
    """airbench's lookahead over a run of total_steps steps: after every `every`-th step, slow ← slow + (1 − decay) ·
    (weights − slow) and the weights restart from slow, with decay = 0.95^5 · (step / total_steps)^3 (≈ 0 for most
    of the run, 0.77 at its end); after the last step the weights are slow. A parameter that gets no gradient (a
    frozen block) is left as it is: its slow copy follows it, as pulling it back would move a frozen weight."""

    EVERY = 5
    PEAK_DECAY = 0.95 ** 5

    def __init__(self, model: nn.Module, total_steps: int, every: int = EVERY) -> None:
        if total_steps < 1 or every < 1:
            raise ValueError(f"lookahead needs positive step counts, got {total_steps} steps, every {every}")
        self.total_steps, self.every = total_steps, every
        self.live = float_tensors(model)
        self.slow = [t.detach().clone() for t in self.live]
        self.is_parameter = [isinstance(t, nn.Parameter) for t in self.live]

    def decay(self, step: int) -> float:
        """The decay applied after `step` steps (1-based count of steps done)."""
        return self.PEAK_DECAY * (min(step, self.total_steps) / self.total_steps) ** 3

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Called after each optimizer step with the number of steps done so far."""
        if step % self.every and step < self.total_steps:
            return
        frozen = [(s, t) for s, t, p in zip(self.slow, self.live, self.is_parameter) if p and not t.requires_grad]
        if frozen:  # slow = weights first: the pull below then leaves them exactly as they are
            slow, live = zip(*frozen)
            torch._foreach_copy_(list(slow), list(live))
        if step % self.every == 0:
            torch._foreach_lerp_(self.slow, self.live, 1.0 - self.decay(step))
        torch._foreach_copy_(self.live, self.slow)

    def state_dict(self) -> list[torch.Tensor]:
        return list(self.slow)

    def load_state_dict(self, slow: list[torch.Tensor]) -> None:
        torch._foreach_copy_(self.slow, list(slow))
