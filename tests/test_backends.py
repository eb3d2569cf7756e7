"""Inference backends: one calling convention, inputs checked with a message naming the expected input, ONNX
Runtime's CUDA provider either really used or reported unavailable."""

import pytest
import torch

from alexnet_perf.backends import (BackendUnavailable, eager_backend, exported_program_backend, ort_backend,
                                   ort_session, torchscript_backend)
from alexnet_perf.checkpoint import load_model
from alexnet_perf.errors import UserError


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))


@pytest.fixture(scope="module")
def backends(exported):
    model, _ = load_model(exported.checkpoint)
    return {"eager": eager_backend(model), "torchscript": torchscript_backend(exported.paths["torchscript"]),
            "torch.export": exported_program_backend(exported.paths["torch.export"]),
            "onnxruntime": ort_backend(exported.paths["onnx"]),
            "int8": ort_backend(exported.paths["int8"], name="onnxruntime-int8")}


@pytest.mark.parametrize("kind", ["eager", "torchscript", "torch.export", "onnxruntime", "int8"])
@pytest.mark.parametrize("bad, got", [
    (_x().double(), "got float64 of shape (4, 3, 32, 32)"),
    (_x().to(torch.uint8), "got uint8 of shape (4, 3, 32, 32)"),
    (torch.randn(4, 3, 28, 28), "got float32 of shape (4, 3, 28, 28)"),
    (torch.randn(3, 32, 32), "got float32 of shape (3, 32, 32)"),
    (torch.randn(4, 32, 32, 3), "got float32 of shape (4, 32, 32, 3)"),
    (_x().numpy(), "got ndarray"),
    (torch.randn(4, 3, 32, 32, device="meta"), "got a tensor on meta"),
])
def test_wrong_input_is_refused_naming_the_expected_input(backends, kind, bad, got):
    with pytest.raises(UserError) as e:
        backends[kind](bad)
    message = str(e.value)
    assert "expects a float32 torch.Tensor of shape (N, 3, 32, 32) on cpu" in message and got in message
    assert "normalize" in message


@pytest.mark.parametrize("kind", ["torchscript", "torch.export", "onnxruntime"])
def test_fp32_backends_return_float32_logits_matching_eager(backends, kind):
    x = _x(5)
    out = backends[kind](x)
    assert out.dtype == torch.float32 and out.shape == (5, 10) and out.device.type == "cpu"
    torch.testing.assert_close(out, backends["eager"](x), rtol=0, atol=1e-4)


def test_amp_channels_last_eager_backend_leaves_the_callers_model_untouched(exported):
    model, _ = load_model(exported.checkpoint)
    model.train()
    backend = eager_backend(model, amp=True, channels_last=True)
    assert backend.name == "eager-bf16-channels-last"
    x = _x(8)
    out = backend(x)
    assert out.dtype == torch.float32
    reference = eager_backend(model)(x)
    assert 0 < (out - reference).abs().max() < 0.25  # bf16 really used, and still close
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert model.features[0].weight.is_contiguous()


def test_ort_session_takes_threads_and_optimisation_level_and_refuses_unknown_levels(exported):
    session = ort_session(exported.paths["onnx"], intra_op_threads=1, inter_op_threads=1,
                          graph_optimization="basic")
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(UserError, match="graph optimisation must be one of disable, basic, extended, all"):
        ort_session(exported.paths["onnx"], graph_optimization="max")


def test_missing_exported_file_says_how_to_make_it(tmp_path):
    for make in (torchscript_backend, exported_program_backend, ort_backend):
        with pytest.raises(UserError, match="exported model not found: .*python -m alexnet_perf.export"):
            make(tmp_path / "none")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the provider is tested for real")
def test_ort_cuda_backend_is_unavailable_without_a_gpu(exported):
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        ort_backend(exported.paths["onnx"], "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ort_cuda_backend_runs_on_the_gpu_through_iobinding(exported, backends):
    try:
        backend = ort_backend(exported.paths["onnx"], "cuda")
    except BackendUnavailable as e:
        pytest.skip(str(e))
    assert backend.session.get_providers()[0] == "CUDAExecutionProvider"
    x = _x(7)
    out = backend(x.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), backends["eager"](x), rtol=0, atol=1e-4)
