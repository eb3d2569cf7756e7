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
                                        matrix_size=64, matrix_reps=1, results=False)
    p = script.profile(cfg)

    (seen,) = observed
    assert len(seen.counters) == 3 and len(seen.durations_ms) == 50 + 3  # untimed warm-up, then the timed calls
    expected: dict[str, float] = defaultdict(float)
    for name, ms in (op for call in seen.counters for op in call):
        expected[name] += ms / 3
    assert p.per_type == pytest.approx(expected, rel=1e-9, abs=1e-12)  # every operator type, its mean per call
    assert p.operators == sum(map(len, seen.counters)) // 3 and p.operators >= 8
    assert any(name.startswith("Convolution") for name in p.per_type)
    timed = sum(seen.durations_ms[-3:]) / 3  # the mean call as seen from inside the script's timing
    assert timed <= p.wall_ms <= 1.5 * timed + 1.0
    assert p.matrix_rate["way"] in ({"int_mm", "onednn_linear"} if precision == "int8" else {"mm", "conv1x1"})
    assert p.matrix_rate["best_gflops"] >= p.matrix_rate["median_gflops"] > 0

    text = script.markdown(cfg, p, 73.6e6)
    assert f"OpenVINO {precision}, batch 4" in text
    assert f"{p.wall_ms:.4f} ms per call ({p.wall_ms / 4:.4f} ms/sample) measured around `infer`" in text
    total = sum(p.per_type.values())
    assert f"the {p.operators} executed operators' own counters sum to {total:.4f} ms per call" in text
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")][2:]
    assert [name.strip() for name, _, _ in rows] == sorted(p.per_type, key=lambda name: -p.per_type[name])
    assert [float(ms) for _, ms, _ in rows] == pytest.approx([p.per_type[n.strip()] for n, _, _ in rows], abs=1e-4)
    assert sum(float(share.strip(" %")) for _, _, share in rows) == pytest.approx(100, abs=0.05 * len(rows))


def test_rates_are_the_networks_operations_over_the_call_and_over_its_matrix_operators(script):
    """A batch of 128 at 73.6 MOP per sample: a 5 ms call, 4 ms of it in convolutions and the fully-connected layer,
    against an int8 matrix rate of 2,000 GOP/s."""
    cfg = script.ProfileInferenceConfig(precision="int8", batch_size=128)
    per_type = {"Convolution (brgconv_avx512_I8)": 3.99, "FullyConnected (brgemm_avx512_i8)": 0.01,
                "MaxPool (jit_avx512_i8)": 0.5, "FakeQuantize (jit_avx512_f32)": 0.3}
    p = script.InferenceProfile(5.0, per_type, 12, {"best_gflops": 2000.0, "median_gflops": 1900.0, "way": "int_mm"})
    line = script.rate_line(cfg, p, 73.6e6)
    call, ops = 128 * 73.6e6 / 5e-3 / 1e9, 128 * 73.6e6 / 4e-3 / 1e9  # 1,884 and 2,355 GOP/s
    assert "**2,000 GOP/s**" in line and "At 73.6 MOP per sample" in line
    assert f"runs at {call:,.0f} GOP/s (**{100 * call / 2000:.0f} %** of it)" in line
    assert f"at {ops:,.0f} GOP/s (**{100 * ops / 2000:.0f} %**) in 4.0000 ms per call" in line
    fp32 = script.rate_line(script.ProfileInferenceConfig(precision="fp32", batch_size=128), p, 73.6e6)
    assert "GFLOP/s" in fp32 and "GOP/s" not in fp32


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
