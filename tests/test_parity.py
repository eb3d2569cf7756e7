"""Parity: the report covers every backend at batch sizes 1 and 256, and an artifact that computes something else
than the checkpoint (beyond the stated tolerances) makes the command fail."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from alexnet_perf import parity
from alexnet_perf.parity import ParityConfig

BACKENDS = {"eager-fp32", "torchscript", "torch.export", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-int8"}


@pytest.fixture
def exports(exported, tmp_path, monkeypatch):
    """A private copy of the exported artifacts (tests alter them), and a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    return shutil.copytree(exported.out, tmp_path / "exports")


def run(exported, exports, capsys) -> tuple[int, dict, str, str]:
    cfg = ParityConfig(checkpoint=str(exported.checkpoint), exports=str(exports), data_dir=str(exported.data_dir),
                       batch1_images=10, random_inputs=6)
    status = parity.main(cfg)
    report = json.loads((exports / "parity.json").read_text())
    return status, report, (exports / "PARITY.md").read_text(), capsys.readouterr().err


def rows(report: dict, status: str) -> set[str]:
    return {r["backend"] for r in report["results"] if r["status"] == status}


def perturb_initializer(path, pick, change) -> None:
    """Rewrite the ONNX model at path with change(array) applied to the first initializer for which pick(array)."""
    proto = onnx.load(str(path))
    init = next(i for i in proto.graph.initializer if pick(numpy_helper.to_array(i)))
    changed = change(numpy_helper.to_array(init)).astype(np.float32)
    init.CopyFrom(numpy_helper.from_array(changed, init.name))
    onnx.save(proto, str(path))


def test_parity_passes_and_reports_every_backend_at_batch_1_and_256(exported, exports, capsys):
    status, report, markdown, _ = run(exported, exports, capsys)
    assert status == 0 and report["passed"]
    assert {r["backend"] for r in report["results"]} == BACKENDS
    cuda = [r for r in report["results"] if r["backend"] == "onnxruntime-cuda"]
    if not torch.cuda.is_available():
        assert cuda == [{"backend": "onnxruntime-cuda", "precision": "fp32", "batch_size": None,
                         "status": "skipped", "reason": "device cuda asked for, but torch sees no CUDA GPU here"}]
        assert "`onnxruntime-cuda`: skipped — device cuda asked for" in markdown
    checked = [r for r in report["results"] if r["status"] != "skipped"]
    assert {(r["backend"], r["batch_size"]) for r in checked} >= {(b, s) for b in BACKENDS - {"onnxruntime-cuda"}
                                                                   for s in (1, 256)}
    assert rows(report, "reference") == {"eager-fp32"} and rows(report, "fail") == set()
    for r in checked:
        assert r["test"]["images"] == (10 if r["batch_size"] == 1 else 64) and r["random"]["inputs"] == 6
        if r["precision"] == "fp32":
            assert r["test"]["max_abs_diff"] <= 1e-4 and r["test"]["top1_agreement"] == 1.0
    assert report["tolerances"] == {"fp32_atol": 1e-4, "fp32_top1_agreement": 1.0, "int8_accuracy_delta_pp": 0.5}
    assert report["command"].startswith("python -m alexnet_perf.parity --checkpoint ")
    assert "--batch1-images 10 --random-inputs 6" in report["command"]
    assert "| onnxruntime-int8 (int8) | 256 | 64 |" in markdown and "max |Δlogit| ≤ 0.0001" in markdown
    assert "**Result: every backend is within tolerance.**" in markdown


def test_parity_fails_when_an_fp32_artifact_is_perturbed_beyond_tolerance(exported, exports, capsys):
    perturb_initializer(exports / "alexnet_cifar.onnx", lambda a: a.ndim == 4, lambda a: a * 1.01)
    status, report, markdown, err = run(exported, exports, capsys)
    assert status == 1 and not report["passed"]
    assert rows(report, "fail") == {"onnxruntime-cpu"}
    failed = [r for r in report["results"] if r["status"] == "fail"]
    assert {r["batch_size"] for r in failed} == {1, 256}
    assert all(any("max |Δlogit|" in f and "> atol 0.0001" in f for f in r["failures"]) for r in failed)
    assert "parity failed for onnxruntime-cpu (batch 1), onnxruntime-cpu (batch 256)" in err
    assert "**Result: FAILED**" in markdown and "| FAIL |" in markdown


def test_parity_fails_when_the_int8_model_loses_accuracy(exported, exports, capsys):
    shutil.copy(exports / "alexnet_cifar.onnx", exports / "alexnet_cifar.int8.onnx")
    # the classifier's bias (the model's one 10-vector) pushed towards class 0: nearly everything becomes class 0
    perturb_initializer(exports / "alexnet_cifar.int8.onnx", lambda a: a.shape == (10,),
                        lambda a: a + 100 * (np.arange(10) == 0))
    status, report, _, err = run(exported, exports, capsys)
    assert status == 1 and rows(report, "fail") == {"onnxruntime-int8"}
    row = next(r for r in report["results"] if r["backend"] == "onnxruntime-int8" and r["batch_size"] == 256)
    assert row["test"]["accuracy_delta_pp"] < -0.5 and "tolerance ±0.5 pp" in row["failures"][0]
    assert "parity failed for onnxruntime-int8" in err
