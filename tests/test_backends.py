"""Inference backends: one registry of named backends, one calling convention, inputs checked with a message naming
the expected input, damaged files refused by name, ONNX Runtime's CUDA provider either really used or reported
unavailable, OpenVINO in the precision asked for, fp32 on GPUs without TF32, optional artifacts and missing runtimes
reported unavailable."""

import shutil
import sys

import pytest
import torch

from alexnet_perf import device
from alexnet_perf.artifacts import AOTI_CUDA, FILES
from alexnet_perf.backend_base import BackendUnavailable
from alexnet_perf.backends import backend_specs, create_backend
from alexnet_perf.checkpoint import load_model
from alexnet_perf.device import cpu_has_bf16
from alexnet_perf.errors import UserError
from alexnet_perf.onnx_backends import openvino_backend, ort_backend, ort_session
from alexnet_perf.torch_backends import (TorchBackend, aoti_backend, eager_backend, exact_fp32,
                                         exported_program_backend, torchscript_backend)

from conftest import openvino_lacks_bf16


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))


def _openvino_importable() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def backends(exported):
    model, _ = load_model(exported.checkpoint)
    names = {"eager": "eager-fp32", "torchscript": "torchscript", "torch.export": "torch.export", "aoti": "aoti-cpu",
             "onnxruntime": "onnxruntime-cpu", "int8": "onnxruntime-int8", "openvino": "openvino-fp32",
             "openvino-int8": "openvino-int8"}
    built = _Built()
    for kind, name in names.items():
        try:
            built[kind] = create_backend(name, model, exported.out)
        except BackendUnavailable as e:  # e.g. no OpenVINO (the lent GPU's image): only its tests skip
            built.unavailable[kind] = str(e)
    return built


class _Built(dict):
    """Backends by kind; a test asking for one that cannot run here is skipped with the reason."""

    def __init__(self) -> None:
        super().__init__()
        self.unavailable: dict[str, str] = {}

    def __missing__(self, kind: str):
        pytest.skip(self.unavailable[kind])


@pytest.mark.parametrize("kind", ["eager", "torchscript", "torch.export", "aoti", "onnxruntime", "int8", "openvino",
                                  "openvino-int8"])
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


@pytest.mark.parametrize("kind", ["torchscript", "torch.export", "aoti", "onnxruntime", "openvino"])
def test_fp32_backends_return_float32_logits_matching_eager(backends, kind):
    x = _x(5)
    out = backends[kind](x)
    assert out.dtype == torch.float32 and out.shape == (5, 10) and out.device.type == "cpu"
    torch.testing.assert_close(out, backends["eager"](x), rtol=0, atol=1e-4)


def test_amp_channels_last_eager_backend_leaves_the_callers_model_untouched(exported, monkeypatch):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)  # emulated bf16 computes the same, slower
    model, _ = load_model(exported.checkpoint)
    model.train()
    backend = eager_backend(model, precision="bf16", channels_last=True)
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


def test_registry_names_every_backend_once_and_builds_each_under_its_name(exported):
    model, _ = load_model(exported.checkpoint)
    specs = backend_specs()
    assert len({s.name for s in specs}) == len(specs)
    assert {s.device for s in specs} == {"cpu", "cuda"} and backend_specs("cuda") == [s for s in specs
                                                                                        if s.device == "cuda"]
    for spec in backend_specs("cpu") + ([] if torch.cuda.is_available() else backend_specs("cuda")[:1]):
        try:
            backend = create_backend(spec.name, model, exported.out)
        except BackendUnavailable as e:
            assert (spec.device == "cuda" and not torch.cuda.is_available()) or (
                spec.name.startswith("openvino") and "OpenVINO is not importable" in str(e)) or (
                spec.name == "openvino-bf16" and openvino_lacks_bf16() and "no BF16 support" in str(e)) or (
                spec.precision == "bf16" and not cpu_has_bf16() and "no native bf16" in str(e))
            continue
        assert backend.name == spec.name and backend.device.type == spec.device


def test_unknown_backend_name_is_a_user_error_naming_the_choices(exported):
    model, _ = load_model(exported.checkpoint)
    with pytest.raises(UserError, match=r"unknown backend 'onnx' \(choose from eager-fp32, .*onnxruntime-int8"):
        create_backend("onnx", model, exported.out)


@pytest.mark.parametrize("name", ["torchscript", "torch.export", "aoti-cpu", "onnxruntime-cpu", "onnxruntime-int8",
                                  "openvino-fp32", "openvino-int8"])
def test_damaged_artifact_is_a_user_error_naming_the_file(exported, tmp_path, name):
    if name.startswith("openvino") and not _openvino_importable():
        pytest.skip("OpenVINO is not installed here")
    model, _ = load_model(exported.checkpoint)
    spec = next(s for s in backend_specs() if s.name == name)
    (tmp_path / FILES[spec.artifact]).write_bytes(exported.paths[spec.artifact].read_bytes()[:1000])
    with pytest.raises(UserError, match=f"{FILES[spec.artifact]}: damaged or not loadable"):
        create_backend(name, model, tmp_path)


def test_missing_exported_file_says_how_to_make_it(tmp_path):
    makers = [torchscript_backend, exported_program_backend, aoti_backend, ort_backend]
    if _openvino_importable():  # without it, the backend is unavailable before any file is looked at
        makers.append(openvino_backend)
    for make in makers:
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


@pytest.mark.parametrize("kind", ["torchscript", "torch.export", "aoti", "onnxruntime", "openvino"])
@pytest.mark.parametrize("layout", ["channels-last", "strided"])
def test_fp32_backends_read_any_memory_layout_as_eager_does(backends, kind, layout):
    x = _x(4).contiguous(memory_format=torch.channels_last) if layout == "channels-last" else \
        torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))[:, :, ::2, ::2]
    torch.testing.assert_close(backends[kind](x), backends["eager"](x.contiguous()), rtol=0, atol=1e-4)


def test_torchscript_backend_runs_the_module_optimised_for_inference(backends):
    kinds = {node.kind() for node in backends["torchscript"].module.graph.nodes()}
    assert "prim::mkldnn_convolution" in kinds and "aten::_convolution" not in kinds


def _openvino_properties(backend, batch_size: int = 4) -> dict[str, str]:
    compiled = backend.compiled(batch_size)
    return {"precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}


@pytest.mark.parametrize("kind, precision", [("openvino", "f32"), ("openvino-int8", "f32")])
def test_openvino_backends_force_f32_with_the_latency_hint_and_torchs_threads(backends, kind, precision):
    assert _openvino_properties(backends[kind]) == {"precision": precision, "hint": "LATENCY",
                                                    "threads": torch.get_num_threads()}
    assert backends[kind].host_threads(4) == torch.get_num_threads()


@pytest.mark.parametrize("precision, one_thread_batches", [("fp32", []), ("int8", [1, 2])])
def test_openvino_runs_the_smallest_int8_batches_on_one_thread(exported, precision, one_thread_batches):
    pytest.importorskip("openvino")
    old = torch.get_num_threads()
    torch.set_num_threads(2)  # CI runs one thread a leg: the choice shows only with two
    try:
        backend = create_backend(f"openvino-{precision}", None, exported.out)
    except BackendUnavailable as e:  # e.g. no int8 in OpenVINO on this CPU
        pytest.skip(str(e))
    finally:
        torch.set_num_threads(old)
    for batch_size in (1, 2, 3, 9):
        threads = 1 if batch_size in one_thread_batches else 2
        assert _openvino_properties(backend, batch_size)["threads"] == backend.host_threads(batch_size) == threads


@pytest.mark.parametrize("batch_size", [1, 3, 9])  # copied into the request's buffer up to 8 images, shared above
def test_openvino_compiles_each_batch_size_with_that_size_fixed(backends, batch_size):
    backend, x = backends["openvino"], _x(batch_size)
    out = backend(x.contiguous(memory_format=torch.channels_last))
    shape = backend.compiled(batch_size).input(0).get_partial_shape()
    assert shape.is_static and shape.to_shape() == [batch_size, 3, 32, 32]
    torch.testing.assert_close(out, backends["eager"](x), rtol=0, atol=1e-4)


def test_openvino_bf16_backend_computes_in_bf16_close_to_fp32(exported, backends):
    try:
        backend = create_backend("openvino-bf16", None, exported.out)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    assert _openvino_properties(backend)["precision"] == "bf16"
    x = _x(8)
    assert 0 < (backend(x) - backends["openvino"](x)).abs().max() < 0.25


@pytest.mark.parametrize("kind", ["openvino", "openvino-int8"])
def test_openvino_logits_are_not_overwritten_by_the_next_call(backends, kind):
    first_x, second_x = _x(3), _x(5)[:3]
    first = backends[kind](first_x)
    kept = first.clone()
    backends[kind](second_x)
    assert torch.equal(first, kept) and not torch.equal(first, backends[kind](second_x))


def test_openvino_backend_is_unavailable_when_openvino_cannot_be_imported(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailable, match="OpenVINO is not importable here"):
        create_backend("openvino-fp32", None, exported.out)


def _tf32_flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def _set_tf32_flags(cudnn: bool, matmul: bool) -> None:
    # Plain assignments through torch's own setters: pytest's monkeypatch would undo them by deleting the
    # attributes of torch's flag modules, which breaks every later read of the flags.
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


def test_fp32_torch_backend_on_a_gpu_runs_without_tf32_and_restores_the_settings():
    seen = []

    def module(x: torch.Tensor) -> torch.Tensor:
        seen.append(_tf32_flags())
        return x.flatten(1)[:, :10]

    before = _tf32_flags()
    try:
        _set_tf32_flags(True, True)
        TorchBackend("eager-fp32-cuda", module, torch.device("cuda")).forward(_x(1))
        TorchBackend("eager-bf16-cuda", module, torch.device("cpu"), "bf16").forward(_x(1))
        with exact_fp32(torch.device("cpu")):
            seen.append(_tf32_flags())
        assert seen == [(False, False), (True, True), (True, True)]
        assert _tf32_flags() == (True, True)
    finally:
        _set_tf32_flags(*before)
    assert _tf32_flags() == before


def test_a_set_without_the_cuda_aoti_package_makes_that_backend_unavailable(exported, tmp_path):
    exports = shutil.copytree(exported.out, tmp_path / "exports")
    (exports / FILES[AOTI_CUDA]).unlink(missing_ok=True)
    reason = "written only by an export on a machine with a CUDA GPU" if torch.cuda.is_available() else "no CUDA GPU"
    with pytest.raises(BackendUnavailable, match=reason):
        create_backend("aoti-cuda", None, exports)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_aoti_cuda_backend_matches_eager_on_the_gpu(exported, backends):
    backend = create_backend("aoti-cuda", None, exported.out)
    x = _x(7)
    out = backend(x.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), backends["eager"](x), rtol=0, atol=1e-4)
