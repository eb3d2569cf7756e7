"""benchmarks/profile_inference.py: OpenVINO's per-operator times add up, and mistakes (flags, missing, damaged or
unsafe files) are one line."""

import shutil

import onnx
import pytest

from alexnet_perf import flags
from alexnet_perf.artifacts import FILES, ONNX

from conftest import benchmark_script


@pytest.fixture(scope="module")
def script():
    yield from benchmark_script("profile_inference")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_executed_operator_is_timed_and_tabled(script, exported, precision):
    cfg = script.ProfileInferenceConfig(precision=precision, batch_size=4, calls=3, exports=str(exported.out),
                                        results=False)
    wall, per_type, operators = script.profile(cfg)
    assert operators >= 8 and per_type and all(ms >= 0 for ms in per_type.values())
    assert any(name.startswith("Convolution") for name in per_type)
    assert sum(per_type.values()) > 0 and wall > 0
    text = script.markdown(cfg, wall, per_type, operators)
    rows = len(per_type) + 2  # header, rule, one row per operator type
    assert f"OpenVINO {precision}, batch 4" in text and text.count("\n| ") == rows


def test_missing_exports_and_bad_flags_are_one_line(script, tmp_path, capsys):
    assert flags.run(script.ProfileInferenceConfig, script.main, script.PROG, "",
                   ["--exports", str(tmp_path), "--no-results"]) == 2
    assert "exported model not found" in capsys.readouterr().err
    assert flags.run(script.ProfileInferenceConfig, script.main, script.PROG, "", ["--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def _profile_cli(script, exports, capfd):
    code = flags.run(script.ProfileInferenceConfig, script.main, script.PROG, "",
                   ["--exports", str(exports), "--precision", "fp32", "--calls", "1", "--no-results"])
    return code, capfd.readouterr().err


def test_a_damaged_artifact_is_one_line_with_openvinos_reason(script, exported, tmp_path, capfd):
    exports = shutil.copytree(exported.out, tmp_path / "exports")
    onnx_file = exports / FILES[ONNX]
    onnx_file.write_bytes(b"\x08\x07garbage" * 100)  # OpenVINO's frontends each log their attempt at it
    code, err = _profile_cli(script, exports, capfd)
    assert code == 2 and err.count("\n") == 1 and "damaged or not loadable" in err
    assert "Unable to read the model" in err  # OpenVINO's reason, not only where it raised it


def test_onnx_external_data_outside_its_folder_is_refused_in_one_line(script, exported, tmp_path, capfd):
    exports = shutil.copytree(exported.out, tmp_path / "exports")
    proto = onnx.load(str(exports / FILES[ONNX]))
    onnx.save(proto, str(exports / FILES[ONNX]), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    outside = onnx.load(str(exports / FILES[ONNX]), load_external_data=False)
    for tensor in outside.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    onnx.save(outside, str(exports / FILES[ONNX]))
    (tmp_path / "secret.bin").write_bytes((exports / "weights.bin").read_bytes())
    code, err = _profile_cli(script, exports, capfd)
    assert code == 2 and err.count("\n") == 1 and "'../secret.bin', outside the model's folder" in err, err
