"""alexnet_perf.ema: the exponential moving average and the lookahead of a model's weights and BatchNorm statistics."""

import math
import re

import pytest
import torch
from torch import nn

from alexnet_perf.ema import EMA, Lookahead, float_tensors


def test_ema_update_is_an_exponential_moving_average_of_weights_and_bn_statistics():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    start = [t.clone() for t in (*ema.model.parameters(), *ema.model.buffers()) if t.is_floating_point()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update()
    now = [t for t in (*ema.model.parameters(), *ema.model.buffers()) if t.is_floating_point()]
    live = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    for s0, s1, w in zip(start, now, live):
        torch.testing.assert_close(s1, 0.9 * s0 + 0.1 * w)
    assert not any(p.requires_grad for p in ema.model.parameters())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5, math.nan, math.inf])
def test_ema_rejects_a_decay_outside_zero_one_by_name(decay):
    with pytest.raises(ValueError, match=re.escape(f"EMA decay must be in (0, 1), got {decay}")):
        EMA(nn.Linear(1, 1), decay)


@pytest.mark.parametrize("decay", [1e-6, 0.5, 0.999])
def test_ema_accepts_a_decay_inside_zero_one(decay):
    assert EMA(nn.Linear(1, 1), decay).decay == decay


def shift(model: nn.Module, by: float) -> None:
    with torch.no_grad():
        for t in float_tensors(model):
            t.add_(by)


def test_lookahead_pulls_the_weights_into_the_slow_copy_every_fifth_step_with_a_cubic_decay():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    start = [t.clone() for t in float_tensors(model)]
    look = Lookahead(model, total_steps=10)
    for step in range(1, 5):
        shift(model, 1.0)
        look.after_step(step)
    for s, w in zip(start, float_tensors(model)):
        torch.testing.assert_close(w, s + 4.0)  # between pulls the weights move freely
    shift(model, 1.0)
    look.after_step(5)
    decay = 0.95 ** 5 * 0.5 ** 3
    for s, slow, w in zip(start, look.state_dict(), float_tensors(model)):
        torch.testing.assert_close(slow, decay * s + (1 - decay) * (s + 5.0))
        torch.testing.assert_close(w, slow)


def test_lookahead_ends_the_run_on_the_slow_weights():
    model = nn.Linear(2, 2)
    look = Lookahead(model, total_steps=7)
    for step in range(1, 8):
        shift(model, 1.0)
        look.after_step(step)
        if step == 5:
            slow_after_5 = [t.clone() for t in look.state_dict()]
    for slow, kept, w in zip(look.state_dict(), slow_after_5, float_tensors(model)):
        torch.testing.assert_close(slow, kept)  # steps 6 and 7 are no fifth steps: no pull into slow
        torch.testing.assert_close(w, slow)  # but after the last step the weights restart from slow


def test_lookahead_leaves_a_parameter_without_gradient_where_it_is_and_its_slow_copy_follows_it():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    start = [t.clone() for t in float_tensors(model)]
    look = Lookahead(model, total_steps=10)
    model[0].requires_grad_(False)  # as a frozen block: set after the lookahead was built
    for step in range(1, 6):
        shift(model, 1.0)
        look.after_step(step)
    decay = 0.95 ** 5 * 0.5 ** 3
    frozen = {id(p) for p in model[0].parameters()}
    for s, slow, w in zip(start, look.state_dict(), float_tensors(model)):
        expected = s + 5.0 if id(w) in frozen else decay * s + (1 - decay) * (s + 5.0)
        torch.testing.assert_close(w, expected)
        torch.testing.assert_close(slow, w)


@pytest.mark.parametrize("steps, every", [(0, 5), (10, 0)])
def test_lookahead_rejects_non_positive_step_counts(steps, every):
    with pytest.raises(ValueError, match="lookahead needs positive step counts"):
        Lookahead(nn.Linear(1, 1), steps, every)
