"""The CPU training compile's max-pool rewrites: exactly aten's values, indices and gradients, ties and NaN included,
in eager calls and inside a compiled step."""

import pytest
import torch
from torch import nn

from alexnet_perf import compilation
from alexnet_perf.compilation import POOL, _pool_2x2, _pool_2x2_backward, compile_network

aten = torch.ops.aten


def _rewritten_pool():
    from torch._inductor.decomposition import select_decomp_table
    from torch._inductor.inductor_prims import _low_memory_max_pool_with_offsets
    return _pool_2x2(select_decomp_table()[POOL], _low_memory_max_pool_with_offsets)


def _tied_maps() -> torch.Tensor:
    """Small integer values (most windows hold ties) with NaN in some windows, one of them twice."""
    x = torch.randint(-2, 3, (2, 4, 6, 8), generator=torch.Generator().manual_seed(0)).float()
    x[0, 0, 0, 0] = x[0, 0, 0, 1] = x[1, 3, 2, 5] = float("nan")
    return x


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_2x2_pool_rewrite_gives_aten_values_indices_and_gradients_with_ties_and_nan(layout):
    x = _tied_maps().contiguous(memory_format=layout)
    values, indices = aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
    new_values, new_indices = _rewritten_pool()(x, [2, 2], [2, 2])
    torch.testing.assert_close(new_values, values, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(new_indices, indices)
    grad = torch.randn_like(values)
    expected = aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
    got = _pool_2x2_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
    assert torch.equal(got, expected)
    assert got.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("kernel, stride, padding, width", [(3, 2, 1, 8), (2, 1, 0, 8), (2, 2, 0, 7)])
def test_pools_with_overlapping_padded_or_partial_windows_keep_inductors_handling(kernel, stride, padding, width):
    x = torch.randn(1, 2, 8, width)
    calls = []
    pool = _pool_2x2(lambda *args: calls.append(args) or "default", None)
    assert pool(x, [kernel, kernel], [stride, stride], [padding, padding]) == "default" and len(calls) == 1
    values, indices = aten.max_pool2d_with_indices(x, [kernel] * 2, [stride] * 2, [padding] * 2)
    assert _pool_2x2_backward(torch.ones_like(values), x, [kernel] * 2, [stride] * 2, [padding] * 2, [1, 1], False,
                              indices) is NotImplemented


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_pool_step_uses_the_rewrite_and_matches_eager_exactly_on_tied_inputs(monkeypatch, dtype):
    """Pool after ReLU (the network's order): zeros tie in most windows, and rounded values tie elsewhere."""
    traced = []
    monkeypatch.setattr(compilation, "_pool_2x2_backward", lambda *args: traced.append(1) or _pool_2x2_backward(*args))
    torch.manual_seed(0)
    torch.compiler.reset()
    block = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.ReLU(), nn.MaxPool2d(2)).to(memory_format=torch.channels_last)
    x = torch.randint(-3, 4, (4, 8, 16, 16)).to(dtype).contiguous(memory_format=torch.channels_last)
    grads = []
    for net in (block, compile_network(block, torch.device("cpu"))):
        xi = x.clone().requires_grad_()
        out = net(xi)
        out.backward(torch.arange(out.numel(), dtype=dtype).view_as(out))
        grads.append((out.detach(), xi.grad))
    assert len(traced) == 2  # both pools' backward
    assert torch.equal(grads[1][0], grads[0][0])
    assert torch.equal(grads[1][1], grads[0][1])
