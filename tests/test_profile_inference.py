"""benchmarks/profile_inference.py: OpenVINO's per-operator times add up, and mistakes are one line."""

import pytest

from alexnet_perf import cli

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
    assert cli.run(script.ProfileInferenceConfig, script.main, script.PROG, "",
                   ["--exports", str(tmp_path), "--no-results"]) == 2
    assert "exported model not found" in capsys.readouterr().err
    assert cli.run(script.ProfileInferenceConfig, script.main, script.PROG, "", ["--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
