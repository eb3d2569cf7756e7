"""Parity: the report covers every backend of the registry at batch sizes 1 and 256, and an artifact that computes
something else than the checkpoint (beyond the stated tolerances), comes from another checkpoint, or cannot be read
makes the command fail; missing files and an unwritable folder are refused before any work."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from alexnet_perf import parity
from alexnet_perf.artifacts import AOTI_CUDA, FILES, INT8, SOURCE_SHA256_KEY
from alexnet_perf.atomic import claim_output
from alexnet_perf.backends import backend_specs
from alexnet_perf.device import cpu_has_bf16
from alexnet_perf.errors import UserError
from alexnet_perf.parity import ParityConfig
from alexnet_perf.records import ParityReport

from conftest import openvino_lacks_bf16

REGISTRY = {s.name for s in backend_specs()}
CPU = {s.name for s in backend_specs("cpu")}


@pytest.fixture
def exports(exported, tmp_path, monkeypatch):
    """A private copy of the exported artifacts (tests alter them), and a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    return shutil.copytree(exported.out, tmp_path / "exports")


def only(monkeypatch, *names) -> None:
    """Check only these backends (the compiled ones take tens of seconds to compile on two cores)."""
    monkeypatch.setattr(parity, "backend_specs", lambda: [s for s in backend_specs() if s.name in names])


def run(exported, exports, capsys, **overrides) -> tuple[int, dict, str, str]:
    cfg = ParityConfig(checkpoint=str(exported.checkpoint), exports=str(exports), data_dir=str(exported.data_dir),
                       batch1_images=10, random_inputs=6, **overrides)
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


def set_source(path, sha256: str) -> None:
    """Record another source checkpoint in the ONNX model at path."""
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, SOURCE_SHA256_KEY: sha256})
    onnx.save(proto, str(path))


def test_parity_checks_every_backend_of_the_registry_at_batch_1_and_256(exported, exports, capsys):
    status, report, markdown, _ = run(exported, exports, capsys)
    assert status == 0 and report["passed"]
    assert {r["backend"] for r in report["results"]} == REGISTRY
    unavailable_here = ({"openvino-bf16"} if openvino_lacks_bf16() else set()) | \
        (set() if cpu_has_bf16() else {s.name for s in backend_specs("cpu") if s.precision == "bf16"})
    if not torch.cuda.is_available():
        assert rows(report, "skipped") == REGISTRY - CPU | unavailable_here
        assert "`onnxruntime-cuda`: skipped — device cuda asked for, but torch sees no CUDA GPU here" in markdown
    checked = [r for r in report["results"] if r["status"] not in ("skipped",)]
    assert {(r["backend"], r["batch_size"]) for r in checked} >= {(b, s) for b in CPU - unavailable_here
                                                                  for s in (1, 256)}
    assert rows(report, "reference") == {"eager-fp32"} and rows(report, "fail") == set()
    for r in checked:
        assert r["test"]["images"] == (10 if r["batch_size"] == 1 else 64) and r["random"]["inputs"] == 6
        if r["precision"] == "fp32":
            assert r["test"]["max_abs_diff"] <= 1e-4 and r["test"]["top1_agreement"] == 1.0
        else:
            assert r["test"]["top1_agreement"] >= 0.97
    assert {r["precision"] for r in checked} == ({"fp32", "bf16", "int8"} if cpu_has_bf16() else {"fp32", "int8"})
    assert {"aoti-cpu", "openvino-fp32", "openvino-bf16", "openvino-int8"} - unavailable_here <= \
        {r["backend"] for r in checked}
    assert report["tolerances"] == {"fp32_atol": 1e-4, "fp32_top1_agreement": 1.0, "accuracy_delta_pp": 0.5,
                                    "min_top1_agreement": 0.97}
    assert report["command"].startswith("python -m alexnet_perf.parity --checkpoint ")
    assert "--batch1-images 10 --random-inputs 6" in report["command"]
    assert "| onnxruntime-int8 (int8) | 256 | 64 |" in markdown and "top-1 agreement ≥ 97%" in markdown
    assert ("| compiled-bf16-channels-last (bf16) | 1 | 10 |" in markdown) == cpu_has_bf16()
    assert "**Result: every backend is within tolerance.**" in markdown


def test_parity_fails_when_an_fp32_artifact_is_perturbed_beyond_tolerance(exported, exports, capsys, monkeypatch):
    only(monkeypatch, "eager-fp32", "onnxruntime-cpu")
    perturb_initializer(exports / "alexnet_cifar.onnx", lambda a: a.ndim == 4, lambda a: a * 1.01)
    status, report, markdown, err = run(exported, exports, capsys)
    assert status == 1 and not report["passed"]
    assert rows(report, "fail") == {"onnxruntime-cpu"}
    failed = [r for r in report["results"] if r["status"] == "fail"]
    assert {r["batch_size"] for r in failed} == {1, 256}
    assert all(any("max |Δlogit|" in f and "> atol 0.0001" in f for f in r["failures"]) for r in failed)
    assert "parity failed for onnxruntime-cpu (batch 1), onnxruntime-cpu (batch 256)" in err
    assert "**Result: FAILED**" in markdown and "| FAIL |" in markdown


def test_parity_fails_when_the_int8_model_loses_accuracy(exported, exports, capsys, monkeypatch):
    only(monkeypatch, "eager-fp32", "onnxruntime-int8")
    shutil.copy(exports / "alexnet_cifar.onnx", exports / "alexnet_cifar.int8.onnx")
    # the classifier's bias (the model's one 10-vector) pushed towards class 0: nearly everything becomes class 0
    perturb_initializer(exports / "alexnet_cifar.int8.onnx", lambda a: a.shape == (10,),
                        lambda a: a + 100 * (np.arange(10) == 0))
    status, report, _, err = run(exported, exports, capsys)
    assert status == 1 and rows(report, "fail") == {"onnxruntime-int8"}
    row = next(r for r in report["results"] if r["backend"] == "onnxruntime-int8" and r["batch_size"] == 256)
    assert row["test"]["accuracy_delta_pp"] < -0.5 and "tolerance ±0.5 pp" in row["failures"][0]
    assert "parity failed for onnxruntime-int8" in err


def test_int8_model_must_agree_with_the_reference_not_only_match_its_accuracy(exported, exports, capsys,
                                                                              monkeypatch):
    """With the accuracy check made vacuous, an INT8 model computing something else still fails on agreement."""
    only(monkeypatch, "eager-fp32", "onnxruntime-int8")
    shutil.copy(exports / "alexnet_cifar.onnx", exports / "alexnet_cifar.int8.onnx")
    perturb_initializer(exports / "alexnet_cifar.int8.onnx", lambda a: a.shape == (10,),
                        lambda a: a + 100 * (np.arange(10) == 0))
    status, report, _, _ = run(exported, exports, capsys, accuracy_tolerance_pp=100.0)
    row = next(r for r in report["results"] if r["backend"] == "onnxruntime-int8" and r["batch_size"] == 256)
    assert status == 1 and row["status"] == "fail"
    assert row["failures"] == [f"test inputs: top-1 agreement {100 * row['test']['top1_agreement']:.2f}% < 97%"]


def test_artifact_from_another_checkpoint_is_a_failed_row_naming_both(exported, exports, capsys, monkeypatch):
    only(monkeypatch, "eager-fp32", "onnxruntime-int8")
    set_source(exports / FILES[INT8], "cd" * 32)
    status, report, markdown, err = run(exported, exports, capsys)
    (row,) = [r for r in report["results"] if r["backend"] == "onnxruntime-int8"]
    assert status == 1 and row["status"] == "fail" and row["batch_size"] is None
    assert row["failures"] == [f"alexnet_cifar.int8.onnx was exported from checkpoint sha256 cdcdcdcdcdcd…, not "
                               f"from {exported.checkpoint} (sha256 {report['checkpoint_sha256'][:12]}…)"]
    assert "- `onnxruntime-int8`: FAIL — alexnet_cifar.int8.onnx was exported from" in markdown
    assert "parity failed for onnxruntime-int8" in err


@pytest.mark.parametrize("name", ["torchscript", "torch.export", "aoti-cpu", "onnxruntime-cpu", "openvino-fp32"])
def test_damaged_artifact_is_a_failed_row_not_a_crash(exported, exports, capsys, monkeypatch, name):
    only(monkeypatch, "eager-fp32", name)
    spec = next(s for s in backend_specs() if s.name == name)
    path = exports / FILES[spec.artifact]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    status, report, markdown, _ = run(exported, exports, capsys)
    (row,) = [r for r in report["results"] if r["backend"] == name]
    assert status == 1 and row["status"] == "fail" and "damaged" in row["failures"][0]
    assert FILES[spec.artifact] in row["failures"][0] and "**Result: FAILED**" in markdown


def test_a_set_without_the_optional_cuda_package_passes_with_that_backend_skipped(exported, exports, capsys,
                                                                                  monkeypatch):
    only(monkeypatch, "eager-fp32", "aoti-cuda")
    (exports / FILES[AOTI_CUDA]).unlink(missing_ok=True)
    status, report, _, _ = run(exported, exports, capsys)
    (row,) = [r for r in report["results"] if r["backend"] == "aoti-cuda"]
    assert status == 0 and row["status"] == "skipped"
    assert ("written only by an export on a machine with a CUDA GPU" if torch.cuda.is_available()
            else "no CUDA GPU") in row["reason"]


def test_missing_artifacts_are_refused_in_one_line_naming_each(exported, exports):
    (exports / "alexnet_cifar.pt2").unlink()
    (exports / "alexnet_cifar.onnx").unlink()
    (exports / "parity.json").unlink(missing_ok=True)
    out = subprocess.run([sys.executable, "-m", "alexnet_perf.parity", "--checkpoint", str(exported.checkpoint),
                          "--exports", str(exports), "--data-dir", str(exported.data_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert f"{exports} lacks alexnet_cifar.onnx, alexnet_cifar.pt2" in out.stderr
    assert not (exports / "parity.json").exists()


def test_unwritable_exports_folder_is_refused_before_any_work(exported, exports, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != str(exports))
    monkeypatch.setattr(parity, "load_model", lambda *a: pytest.fail("work started"))
    cfg = ParityConfig(checkpoint=str(exported.checkpoint), exports=str(exports), data_dir=str(exported.data_dir))
    with pytest.raises(UserError, match=f"--exports {exports}: {exports} is not writable"):
        parity.run_parity(cfg, "parity")


def test_damaged_parity_json_is_a_user_error(tmp_path):
    path = tmp_path / "parity.json"
    path.write_text(json.dumps({"checkpoint_sha256": "ab", "results": []}))
    with pytest.raises(UserError, match=r"parity.json: not a parity report of this version \(date is missing"):
        ParityReport.read(path)
    path.write_text("{truncated")
    with pytest.raises(UserError, match="parity.json: not readable JSON"):
        ParityReport.read(path)


def test_an_exports_folder_held_by_an_export_is_refused_before_any_work(exported, exports, monkeypatch):
    monkeypatch.setattr(parity, "load_model", lambda *a: pytest.fail("work started"))
    cfg = ParityConfig(checkpoint=str(exported.checkpoint), exports=str(exports), data_dir=str(exported.data_dir))
    with claim_output(exports, "--out"):
        with pytest.raises(UserError, match=f"--exports {exports} is in use by another run"):
            parity.main(cfg)
    assert not (exports / "PARITY.md").exists()
