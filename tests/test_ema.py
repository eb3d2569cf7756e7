"""alexnet_perf.ema: the exponential moving average of a model's weights and BatchNorm statistics."""

import math
import re

import pytest
import torch
from torch import nn

from alexnet_perf.ema import EMA


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
