"""alexnet_perf.matrix_rate: the rate is the product's FLOPs over its fastest call, each precision done its ways,
and the better of two measurements is kept."""

from types import SimpleNamespace

import pytest
import torch

from alexnet_perf import matrix_rate


def _clock(monkeypatch, *call_seconds: float) -> None:
    """A clock under which the timed calls take call_seconds in turn."""
    ticks = iter([t for i, s in enumerate(call_seconds) for t in (i, i + s)])
    monkeypatch.setattr(matrix_rate, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))


def test_rate_is_the_products_flops_over_its_fastest_and_median_call_of_the_faster_way(monkeypatch):
    _clock(monkeypatch, 0.003, 0.001, 0.002, 0.004, 0.004, 0.004)  # torch.mm's three calls, then the convolution's
    rate = matrix_rate.matrix_rate("fp32", 64, reps=3)
    flops = 2 * 64 ** 3  # multiply and add of each of the 64 × 64 × 64 products
    assert rate == pytest.approx({"best_gflops": flops / 0.001 / 1e9, "median_gflops": flops / 0.002 / 1e9,
                                  "way": "mm", "mm_best_gflops": flops / 0.001 / 1e9,
                                  "conv1x1_best_gflops": flops / 0.004 / 1e9})


@pytest.mark.parametrize("precision", ["bf16", "fp32", "int8"])
def test_each_way_computes_the_product_in_its_precision(precision):
    ways = matrix_rate._ways(precision, 32)
    assert set(ways) == ({"int_mm", "onednn_linear"} if precision == "int8" else {"mm", "conv1x1"})
    products = [run() for run in ways.values()]
    products = [p[0, :, :, 0].T if p.dim() == 4 else p for p in products]  # the convolution's [0, j, i, 0] is [i, j]
    expected = [torch.int32, torch.float32] if precision == "int8" else [matrix_rate.PRECISIONS[precision]] * 2
    assert [p.dtype for p in products] == expected  # oneDNN's int8 layer returns its int32 sums exactly in fp32
    tolerance = dict(rtol=0.02, atol=0.5) if precision == "bf16" else dict(rtol=1e-5, atol=1e-3)
    for product in products[1:]:  # the same product, whichever way (bf16 ways may round differently)
        torch.testing.assert_close(product.float(), products[0].float(), **tolerance)


def test_int8_rate_times_the_int8_product_summed_in_int32(monkeypatch):
    seen = []
    int_mm = torch._int_mm

    def spy(a, b):
        seen.append((a.dtype, b.dtype, tuple(a.shape), tuple(b.shape)))
        return int_mm(a, b)

    monkeypatch.setattr(torch, "_int_mm", spy)
    _clock(monkeypatch, 0.002, 0.001, 0.004, 0.004)  # torch._int_mm's two timed calls, then oneDNN's
    rate = matrix_rate.matrix_rate("int8", 64, reps=2)
    assert seen == [(torch.int8, torch.int8, (64, 64), (64, 64))] * 3  # one untimed call, then the two timed
    assert rate["way"] == "int_mm" and rate["best_gflops"] == pytest.approx(2 * 64 ** 3 / 0.001 / 1e9)
    assert rate["onednn_linear_best_gflops"] == pytest.approx(2 * 64 ** 3 / 0.004 / 1e9)


def test_int8_rate_without_onednns_int8_layer_is_torch_int_mm_alone(monkeypatch):
    monkeypatch.setattr(matrix_rate, "_onednn_int8_product", lambda a, b: None)
    assert set(matrix_rate._ways("int8", 16)) == {"int_mm"}


def test_the_faster_of_two_measurements_is_kept_per_precision():
    slow, fast = {"best_gflops": 1.0, "way": "mm"}, {"best_gflops": 2.0, "way": "conv1x1"}
    assert matrix_rate.fastest({"bf16": slow, "int8": fast}, {"bf16": fast, "int8": slow}) == {"bf16": fast,
                                                                                               "int8": fast}
