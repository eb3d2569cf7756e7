"""The CPU training compile's rewrites: max-pool gives exactly aten's values, indices and gradients (ties and NaN
included), BatchNorm's forward and backward the stock decomposition's outputs and gradients, and the tiled
convolution backward aten's gradients, in eager calls and inside a compiled step; the compiled graphs are kept in
torch's persistent caches."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from alexnet_perf import compilation, flags
from alexnet_perf.compilation import (BATCH_NORM, BATCH_NORM_BACKWARD, CONVOLUTION_BACKWARD, POOL, POOL_BACKWARD,
                                      _batch_norm_backward_low_precision, _batch_norm_two_pass,
                                      _convolution_backward_tiled, _pool_2x2, _pool_2x2_backward, compile_network,
                                      warm_compiler_keys)
from alexnet_perf.model import AlexNetCifar

aten = torch.ops.aten


@pytest.fixture(autouse=True)
def fresh_backend():
    """A backend built for each test from the rewrites as the test has them (several replace one): the process keeps
    one per table, built from what the rewrites were when it was first asked for."""
    compilation._inductor_with_cpu_rewrites.cache_clear()
    yield
    compilation._inductor_with_cpu_rewrites.cache_clear()


@pytest.fixture
def empty_compile_cache(monkeypatch, tmp_path):
    """torch's compile caches in an empty folder, for tests that need the rewrites traced: a graph an earlier run
    left in the shared cache would be loaded without tracing them."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))


def _rewritten_pool():
    return compilation.rewrite_table()[POOL]


def _rewritten_pool_backward():
    return compilation.rewrite_table()[POOL_BACKWARD]


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
    got = _rewritten_pool_backward()(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
    assert torch.equal(got, expected)
    assert got.is_contiguous(memory_format=layout)


def test_2x2_pool_rewrite_widens_window_offsets_to_int64_only_from_int32_and_never_multiplies_int64():
    """Inductor's CPU code converts int8 vectors to int64 one lane at a time, and multiplies int64 vectors so too
    before AVX-512 (when the backward still formed these indices, it made the compiled fp32 step 9-14 % slower than
    eager on an AVX2 CPU)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    pool = _rewritten_pool()
    graph = make_fx(lambda x: pool(x, [2, 2], [2, 2]))(torch.randn(2, 4, 6, 8)).graph
    conversions, int64_products = [], []
    for node in graph.nodes:
        args = [a.meta["val"] for a in node.args if isinstance(a, torch.fx.Node)]
        if node.target in (aten._to_copy.default, torch.ops.prims.convert_element_type.default):
            conversions.append((args[0].dtype, node.meta["val"].dtype))
        elif node.target in (aten.mul.Tensor, aten.mul.Scalar) and node.meta["val"].dtype == torch.int64:
            int64_products.append(node)
    assert (torch.int8, torch.int32) in conversions and (torch.int32, torch.int64) in conversions
    assert (torch.int8, torch.int64) not in conversions and not int64_products


def test_2x2_pool_backward_rewrite_forms_no_int64_index_and_never_reads_the_indices():
    """It finds each window's offset again from the pool's input and compares it, as a float, with each input's
    place in its window: inductor's CPU code converts and compares int64 vectors slowly (forming the indices made the
    first block's un-pooling 2.3-3.8 ms against 0.5), and the forward's indices, unread, are never computed."""
    from torch.fx.experimental.proxy_tensor import make_fx

    x = _tied_maps()
    values, indices = aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
    backward = _rewritten_pool_backward()
    graph = make_fx(lambda g, x, i: backward(g, x, [2, 2], [2, 2], [0, 0], [1, 1], False, i))(
        torch.ones_like(values), x, indices).graph
    index_input = [n for n in graph.nodes if n.op == "placeholder"][2]
    assert not index_input.users
    outputs = [v for n in graph.nodes if n.op == "call_function"
               for v in torch.utils._pytree.tree_leaves(n.meta["val"])]
    int64 = [v for v in outputs if isinstance(v, torch.Tensor) and v.dtype == torch.int64]
    assert outputs and all(v.dim() <= 2 for v in int64)  # only the (H, W) pattern of places, from the loop indices


@pytest.mark.parametrize("kernel, stride, padding, width", [(3, 2, 1, 8), (2, 1, 0, 8), (2, 2, 0, 7)])
def test_pools_with_overlapping_padded_or_partial_windows_keep_inductors_handling(kernel, stride, padding, width):
    x = torch.randn(1, 2, 8, width)
    calls = []
    pool = _pool_2x2(lambda *args: calls.append(args) or "default", None)
    assert pool(x, [kernel, kernel], [stride, stride], [padding, padding]) == "default" and len(calls) == 1
    values, indices = aten.max_pool2d_with_indices(x, [kernel] * 2, [stride] * 2, [padding] * 2)
    assert _rewritten_pool_backward()(torch.ones_like(values), x, [kernel] * 2, [stride] * 2, [padding] * 2, [1, 1],
                                      False, indices) is NotImplemented


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_pool_step_uses_the_rewrite_and_matches_eager_exactly_on_tied_inputs(monkeypatch, empty_compile_cache,
                                                                                      dtype):
    """Pool after ReLU (the network's order): zeros tie in most windows, and rounded values tie elsewhere."""
    traced = []
    monkeypatch.setattr(compilation, "_pool_2x2_backward",
                        lambda offsets: lambda *args: traced.append(1) or _pool_2x2_backward(offsets)(*args))
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


def _stock(op):
    """Inductor's stock decomposition of op."""
    from torch._inductor.decomposition import select_decomp_table
    return select_decomp_table()[op]


def _batch_norm_backward_args(dtype: torch.dtype) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, 5, 5, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(8, 6, 5, 5, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    mean, invstd = x.float().mean((0, 2, 3)), x.float().var((0, 2, 3), unbiased=False).add(1e-5).rsqrt()
    weight = torch.rand(6, generator=g) + 0.5
    return grad, x, weight, torch.zeros(6), torch.ones(6), mean, invstd, True, 1e-5, [True, True, True]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_batch_norm_backward_rewrite_gives_the_stock_gradients(dtype):
    args = _batch_norm_backward_args(dtype)
    expected = _stock(BATCH_NORM_BACKWARD)(*args)
    got = _batch_norm_backward_low_precision(lambda *a: pytest.fail("fell back"))(*args)
    assert [t.dtype for t in got] == [t.dtype for t in expected] == [dtype, torch.float32, torch.float32]
    torch.testing.assert_close(got[0], expected[0])  # both computed in fp32, rounded to dtype once
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], expected[2], rtol=1e-5, atol=1e-5)


def test_batch_norm_backward_of_fp32_or_evaluation_keeps_the_stock_decomposition():
    fp32 = _batch_norm_backward_args(torch.float32)
    evaluation = _batch_norm_backward_args(torch.bfloat16)[:7] + (False, 1e-5, [True, True, True])
    for args in (fp32, evaluation):
        assert _batch_norm_backward_low_precision(lambda *a: "stock")(*args) == "stock"


def _batch_norm_args(dtype: torch.dtype, training: bool = True) -> tuple:
    """A layer's input whose channels sit far from 0 (means up to 40 standard deviations: the statistics must not
    lose them to cancellation), with weights, biases and running statistics."""
    g = torch.Generator().manual_seed(0)
    offsets = torch.tensor([0.0, 1.0, -3.0, 10.0, 40.0, -40.0]).view(1, 6, 1, 1)
    x = (torch.randn(8, 6, 5, 5, generator=g) + offsets).to(dtype).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.rand(6, generator=g) + 0.5, torch.randn(6, generator=g)
    return x, weight, bias, torch.randn(6, generator=g), torch.rand(6, generator=g) + 0.5, training, 0.1, 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_two_pass_batch_norm_forward_gives_the_stock_outputs_and_statistics(dtype):
    args = _batch_norm_args(dtype)
    expected = _stock(BATCH_NORM)(*args)
    got = _batch_norm_two_pass(lambda *a: pytest.fail("fell back"))(*args)
    assert [t.dtype for t in got] == [t.dtype for t in expected] == [dtype] * 3 + [torch.float32] * 2
    torch.testing.assert_close(got[0], expected[0])  # both computed in fp32, rounded to dtype once
    for g, e in zip(got[1:], expected[1:]):
        torch.testing.assert_close(g.float(), e.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1].float(), args[0].float().mean((0, 2, 3)).to(dtype).float())
    torch.testing.assert_close(got[4], 0.9 * args[4] + 0.1 * args[0].float().var((0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_batch_norm_forward_in_evaluation_or_without_affine_parameters_keeps_the_stock_decomposition():
    evaluation = _batch_norm_args(torch.bfloat16, training=False)
    x, _, _, mean, var, *rest = _batch_norm_args(torch.bfloat16)
    for args in (evaluation, (x, None, None, mean, var, *rest)):
        assert _batch_norm_two_pass(lambda *a: "stock")(*args) == "stock"


def test_the_rewrite_tables_training_batch_norm_takes_no_welford_var_mean(monkeypatch):
    """inductor lowers var_mean to a Welford reduction: the table's training forward must not call it (the stock
    decomposition does), and its backward is the low-precision rewrite."""
    table = compilation.rewrite_table()
    monkeypatch.setattr(torch, "var_mean", lambda *a, **k: pytest.fail("var_mean called"))
    table[BATCH_NORM](*_batch_norm_args(torch.bfloat16))
    backward = _batch_norm_backward_args(torch.bfloat16)
    for got, expected in zip(table[BATCH_NORM_BACKWARD](*backward),
                             _batch_norm_backward_low_precision(lambda *a: pytest.fail("fell back"))(*backward)):
        assert torch.equal(got, expected)


def _convolution_backward_args(n: int, side: int, kernel: int, dtype: torch.dtype, stride: int = 1) -> tuple:
    generator = torch.Generator().manual_seed(n + side + kernel)
    x, w = torch.randn(n, 5, side, side, generator=generator), torch.randn(6, 5, kernel, kernel, generator=generator)
    out_side = (side + 2 * (kernel // 2) - kernel) // stride + 1
    grad = torch.randn(n, 6, out_side, out_side, generator=generator)
    x, w, grad = (t.to(dtype).contiguous(memory_format=torch.channels_last) for t in (x, w, grad))
    return (grad, x, w, [6], [stride] * 2, [kernel // 2] * 2, [1, 1], False, [0, 0], 1, [True, True, True])


@pytest.mark.parametrize("side, kernel, per_map", [(8, 3, 4), (6, 3, 16), (6, 5, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiled_convolution_backward_gives_atens_gradients(monkeypatch, side, kernel, per_map, dtype):
    """Images tiled into maps at least 16 wide, gaps as wide as the padding: each gradient sums the terms aten's
    does, so they agree to rounding (oneDNN orders the sums by the map's size). In bf16 both are set against the
    fp32 gradients of the same inputs: where bf16 is emulated (AVX2 only) aten's weight gradient rounds its partial
    sums and is the less exact of the two, so the tiled one must be as close as aten's, give or take one rounding."""
    tile, tiled = compilation._tile, []

    def recorded_tile(*args) -> torch.Tensor:
        tiled.append(tile(*args))
        return tiled[-1]

    monkeypatch.setattr(compilation, "_tile", recorded_tile)
    args = _convolution_backward_args(16, side, kernel, dtype)
    (grad_input, grad_weight, grad_bias) = _convolution_backward_tiled(*args)
    expected = aten.convolution_backward(*args)
    assert grad_input.shape == args[1].shape
    assert len(tiled) == 2 and all(t.shape[0] == 16 // per_map and t.shape[2] >= 16 for t in tiled)
    if dtype == torch.float32:
        for got, want in zip((grad_input, grad_weight, grad_bias), expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        return
    exact = aten.convolution_backward(*(a.float() if isinstance(a, torch.Tensor) else a for a in args))
    for got, atens, want in zip((grad_input, grad_weight, grad_bias), expected, exact):
        rounding = want.abs().max() * 2 ** -8
        assert (got.float() - want).abs().max() <= (atens.float() - want).abs().max() + rounding


@pytest.mark.parametrize("n, side, stride", [(8, 16, 1), (6, 8, 1), (8, 6, 1), (8, 8, 2)])
def test_convolution_backward_of_larger_maps_odd_batches_or_strides_keeps_atens(n, side, stride):
    assert _convolution_backward_tiled(*_convolution_backward_args(n, side, 3, torch.float32, stride)) \
        is NotImplemented


@pytest.mark.slow
def test_compiled_step_runs_small_maps_convolution_backward_tiled_and_matches_eager(monkeypatch, empty_compile_cache):
    """On a CPU with AMX the rewrite is traced in the compiled backward (once for the layer, once more for the tiled
    call it makes, which keeps aten's) and the compiled gradients equal eager's to rounding."""
    monkeypatch.setattr(compilation, "cpu_has_amx", lambda: True)
    batches = []
    monkeypatch.setattr(compilation, "_convolution_backward_tiled",
                        lambda *args: batches.append(args[1].shape[0]) or _convolution_backward_tiled(*args))
    torch.manual_seed(0)
    torch.compiler.reset()
    layer = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()).to(memory_format=torch.channels_last)
    x = torch.randn(8, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    grads = []
    for net in (layer, compile_network(layer, torch.device("cpu"))):
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        net(xi).square().sum().backward()
        grads.append([xi.grad, *(p.grad.clone() for p in layer.parameters())])
    assert batches == [8, 2]
    for compiled, eager in zip(grads[1], grads[0]):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("amx", [True, False])
def test_the_rewrite_table_tiles_convolution_backward_only_on_cpus_with_amx(monkeypatch, amx):
    monkeypatch.setattr(compilation, "cpu_has_amx", lambda: amx)
    from torch._inductor.decomposition import select_decomp_table

    stock = select_decomp_table().get(CONVOLUTION_BACKWARD)
    assert compilation.rewrite_table().get(CONVOLUTION_BACKWARD) is (_convolution_backward_tiled if amx else stock)


@pytest.mark.slow
def test_compiled_bf16_training_step_of_the_network_matches_eager():
    """The whole network in training mode under bf16 autocast: the compiled step's loss and every parameter's
    gradient agree with eager's to bf16 accuracy. A convolution's bias feeds a training BatchNorm, which subtracts
    it again: its true gradient is 0, and both steps must leave only rounding there."""
    torch.manual_seed(0)
    model = AlexNetCifar().to(memory_format=torch.channels_last).train()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.p = 0.0
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.arange(16) % 10
    torch.compiler.reset()
    results = []
    for net in (model, compile_network(model, torch.device("cpu"))):
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        results.append((loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=2e-2, atol=2e-2)
    conv_biases = {f"features.{i}.bias" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)}
    for name, eager in eager_grads.items():
        compiled = compiled_grads[name]
        if name in conv_biases:
            assert eager.abs().max() < 1e-3 and compiled.abs().max() < 1e-3, name
        else:
            assert nn.functional.cosine_similarity(eager.flatten(), compiled.flatten(), dim=0) > 0.99, name


def test_compile_says_in_one_line_when_the_rewrites_cannot_be_built_and_uses_stock_inductor(monkeypatch, capsys):
    def moved(tiled):
        raise ImportError("cannot import name 'select_decomp_table'")

    monkeypatch.setattr(compilation, "_inductor_with_cpu_rewrites", moved)
    net = compile_network(nn.Linear(2, 2), torch.device("cpu"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ImportError: cannot import name 'select_decomp_table'" in err
    assert "compiling with stock inductor" in err and hasattr(net, "_orig_mod")


def test_compile_falls_back_to_stock_inductor_in_one_line_when_the_rewrites_fail_at_the_first_compile(
        monkeypatch, capsys, empty_compile_cache):
    """The rewrites are traced only when the step is first compiled: a failure there (inductor internals that
    moved) must not end the run; the step compiles with stock inductor and computes what eager computes."""
    def moved(*args):
        raise RuntimeError("inductor internals moved")

    monkeypatch.setattr(compilation, "_pool_2x2_backward", lambda pool_with_offsets: moved)
    flags.quiet_cpu_only_warnings()  # as every command does
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)).train()
    x = torch.randn(2, 3, 8, 8)
    torch.compiler.reset()
    grads = []
    for net in (compile_network(model, torch.device("cpu")), model):
        model.zero_grad()
        net(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: inductor internals moved" in err
    assert "compiling with stock inductor" in err
    for compiled, eager in zip(*grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)


def test_each_input_size_gets_a_graph_with_static_shapes(monkeypatch):
    """The tuned recipes switch from 24×24 to 32×32: the second size must not turn into one shape-generic graph."""
    import torch._inductor.compile_fx as inductor

    shapes, compile_fx = [], inductor.compile_fx

    def recording(gm, example_inputs, **kwargs):
        shapes.append([tuple(x.shape) if isinstance(x, torch.Tensor) else x for x in example_inputs])
        return compile_fx(gm, example_inputs, **kwargs)

    monkeypatch.setattr(inductor, "compile_fx", recording)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()
    torch.compiler.reset()
    net = compile_network(model, torch.device("cpu"))
    with torch.no_grad():
        for size in (6, 8, 6, 8):
            assert net(torch.randn(2, 3, size, size)).shape == (2, 4, size // 2, size // 2)
    assert len(shapes) == 2
    assert all(isinstance(d, int) for inputs in shapes for item in inputs
               for d in (item if isinstance(item, tuple) else (item,)) if not isinstance(d, torch.Tensor))
    assert [inputs[-1] for inputs in shapes] == [(2, 3, 6, 6), (2, 3, 8, 8)]


def test_networks_compiled_one_after_another_share_their_graph_past_dynamos_limit(monkeypatch):
    """Run after run in one process (a sweep calling train()), each new network is compiled with the same backend,
    so dynamo's guards find the first run's graph: a backend of its own per network recompiled every graph and,
    past dynamo's limit of graphs per function, ran the rest eagerly."""
    import torch._inductor.compile_fx as inductor

    compiles, compile_fx = [], inductor.compile_fx

    def counting(*args, **kwargs):
        compiles.append(1)
        return compile_fx(*args, **kwargs)

    monkeypatch.setattr(inductor, "compile_fx", counting)
    torch.compiler.reset()
    x = torch.randn(2, 3, 8, 8)
    for _ in range(torch._dynamo.config.recompile_limit + 2):
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        with torch.no_grad():
            compiled, eager = compile_network(model, torch.device("cpu"))(x), model(x)
        torch.testing.assert_close(compiled, eager)
    assert len(compiles) == 1


CACHED_COMPILE = """
import json, torch
from torch import nn
from torch._dynamo.utils import counters
from alexnet_perf.compilation import compile_network
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
net = compile_network(model.to(memory_format=torch.channels_last), torch.device("cpu"))
x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = net(x).float().sum()
loss.backward()
print(json.dumps({**counters["aot_autograd"], **counters["inductor"], "grad": model[0].weight.grad.sum().item()}))
"""


def _compile_in_a_new_process(cache_dir, tag: str = "") -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir), "TORCH_COMPILE_CACHE_KEY_TAG": tag}
    run = subprocess.run([sys.executable, "-c", CACHED_COMPILE], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_a_later_process_loads_the_rewritten_graphs_from_the_persistent_caches(tmp_path):
    """The first run compiles and saves; a second process with the same cache folder compiles nothing: AOTAutograd
    and inductor both hit (inductor's key hashes the rewrite table, which must pickle for that), and computes the
    same gradients. Another cache key tag (as a stock compile has none of the rewrites') misses."""
    first = _compile_in_a_new_process(tmp_path)
    assert first.get("autograd_cache_saved") == 1 and first.get("fxgraph_cache_miss") == 2
    assert "fxgraph_cache_bypass" not in first
    second = _compile_in_a_new_process(tmp_path)
    assert second.get("autograd_cache_hit") == 1 and second.get("fxgraph_cache_hit") == 2
    assert "fxgraph_cache_miss" not in second and second["grad"] == first["grad"]
    other_tag = _compile_in_a_new_process(tmp_path, tag="another-compile")
    assert other_tag.get("autograd_cache_miss") == 1 and "autograd_cache_hit" not in other_tag


@pytest.mark.parametrize("tiled", [True, False])
def test_the_rewrite_table_pickles_as_its_digest_and_the_tag_keeps_the_users(tiled):
    table = compilation.rewrite_table(tiled=tiled)
    assert pickle.loads(pickle.dumps(table)).keys() == table.keys()
    digest = compilation.REWRITES_DIGEST + ("-tiled" if tiled else "")
    assert pickle.dumps(table) != pickle.dumps(compilation.rewrite_table(tiled=not tiled))
    assert digest.encode() in pickle.dumps(table)
    with torch.compiler.config.patch(cache_key_tag="mine"):
        assert compilation.cache_key_tag(tiled) == f"mine+alexnet_perf-rewrites-{digest}"
    with torch.compiler.config.patch(cache_key_tag=""):
        assert compilation.cache_key_tag(tiled) == f"alexnet_perf-rewrites-{digest}"


def test_a_gpu_compile_keeps_static_shapes_in_the_mode_asked_for(monkeypatch):
    """The recipes' CUDA steps compile as CPU training does, static shapes included; only the mode (CUDA graphs with
    reduce-overhead) is the GPU's own. torch.compile is recorded, so no GPU is needed."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: calls.append(kwargs) or model)
    model = nn.Linear(2, 2)
    assert compile_network(model, torch.device("cuda"), "reduce-overhead") is model
    assert compile_network(model, torch.device("cuda")) is model
    assert calls == [{"dynamic": False, "mode": "reduce-overhead"}, {"dynamic": False, "mode": None}]


def test_warming_the_compiler_keys_leaves_the_key_torch_hashes_computed():
    """The thread computes the very function torch's compile caches call for triton's key (lru-cached), so the
    first compile finds it done; without triton there is nothing to warm."""
    try:
        from triton.runtime.cache import triton_key
    except ImportError:
        assert warm_compiler_keys() is None
        return
    from torch._inductor.runtime.triton_compat import triton_key as torchs

    assert torchs is triton_key
    triton_key.cache_clear()
    thread = warm_compiler_keys()
    thread.join(timeout=120)
    assert not thread.is_alive() and triton_key.cache_info().currsize == 1
