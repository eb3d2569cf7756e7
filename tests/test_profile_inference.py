"""benchmarks/profile_inference.py: OpenVINO's per-operator times add up, and mistakes (flags, missing, damaged or
unsafe files) are one line."""

import shutil
import time
from collections import defaultdict

import onnx
import pytest

from alexnet_perf import flags
from alexnet_perf.artifacts import FILES, ONNX

from conftest import benchmark_script


@pytest.fixture(scope="module")
def script():
    yield from benchmark_script("profile_inference")


class _Observed:
    """OpenVINO's compiled model, its one infer request watched: each call's duration, and each executed operator's
    own time as get_profiling_info reports it after a call (what the timed calls ask for)."""

    def __init__(self, compiled) -> None:
        self.compiled, self.durations_ms, self.counters = compiled, [], []

    def create_infer_request(self) -> "_Observed":
        self.request = self.compiled.create_infer_request()
        return self

    def infer(self, inputs):
        start = time.perf_counter()
        out = self.request.infer(inputs)
        self.durations_ms.append(1000 * (time.perf_counter() - start))
        return out

    def get_profiling_info(self):
        info = self.request.get_profiling_info()
        self.counters.append([(f"{i.node_type} ({i.exec_type})", i.real_time.total_seconds() * 1000)
                              for i in info if i.status == i.Status.EXECUTED])
        return info


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_executed_operator_is_timed_per_call_and_tabled(script, exported, precision, monkeypatch):
    observed = []
    load_artifact = script.load_artifact

    def load_observed(path, load) -> _Observed:
        observed.append(_Observed(load_artifact(path, load)))
        return observed[-1]

    monkeypatch.setattr(script, "load_artifact", load_observed)
    cfg = script.ProfileInferenceConfig(precision=precision, batch_size=4, calls=3, exports=str(exported.out),
                                        results=False)
    wall, per_type, operators = script.profile(cfg)

    (seen,) = observed
    assert len(seen.counters) == 3 and len(seen.durations_ms) == 50 + 3  # untimed warm-up, then the timed calls
    expected: dict[str, float] = defaultdict(float)
    for name, ms in (op for call in seen.counters for op in call):
        expected[name] += ms / 3
    assert per_type == pytest.approx(expected, rel=1e-9, abs=1e-12)  # every operator type, its mean per call
    assert operators == sum(map(len, seen.counters)) // 3 and operators >= 8
    assert any(name.startswith("Convolution") for name in per_type)
    timed = sum(seen.durations_ms[-3:]) / 3  # the mean call as seen from inside the script's timing
    assert timed <= wall <= 1.5 * timed + 1.0

    text = script.markdown(cfg, wall, per_type, operators)
    assert f"OpenVINO {precision}, batch 4" in text
    assert f"{wall:.4f} ms per call ({wall / 4:.4f} ms/sample)" in text
    assert f"the {operators} executed operators' own counters sum to {sum(per_type.values()):.4f} ms per call" in text
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")][2:]
    assert [name.strip() for name, _, _ in rows] == sorted(per_type, key=lambda name: -per_type[name])
    assert [float(ms) for _, ms, _ in rows] == pytest.approx([per_type[n.strip()] for n, _, _ in rows], abs=1e-4)
    assert sum(float(share.strip(" %")) for _, _, share in rows) == pytest.approx(100, abs=0.05 * len(rows))


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
