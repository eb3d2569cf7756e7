"""benchmarks/profile_step.py on a tiny batch (eager variants only, no compilation): its JSON adds up, its
RESULTS.md section replaces only itself, and mistakes are refused in one line before any work."""

import json

import pytest
import torch
from torch.autograd.profiler_util import FunctionEvent

from alexnet_perf import flags
from alexnet_perf.device import amp_precision

from conftest import benchmark_script, full_disk

TINY = ["--batch-size", "16", "--steps", "1", "--profiled-steps", "1", "--profile-rounds", "1", "--warmup", "1",
        "--no-compiled", "--matrix-size", "64", "--matrix-reps", "1"]


@pytest.fixture(scope="module")
def profile_module():
    yield from benchmark_script("profile_step")


def _cli(module, capsys, *args: str) -> tuple[int, str, str]:
    code = flags.run(module.ProfileConfig, module.main, module.PROG, "", list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tiny_run(profile_module, tmp_path_factory) -> tuple[dict, str]:
    """One tiny run writing a JSON and a section into a results file that already holds another section."""
    folder = tmp_path_factory.mktemp("profile")
    results = folder / "RESULTS.md"
    results.write_text("# Results\n\n<!-- begin other -->\nkept\n<!-- end other -->\n")
    code = flags.run(profile_module.ProfileConfig, profile_module.main, profile_module.PROG, "",
                   [*TINY, "--json", str(folder / "p.json"), "--results-file", str(results)])
    assert code == 0
    return json.loads((folder / "p.json").read_text()), results.read_text()


def test_json_categories_add_up_and_rates_follow_from_the_timings(profile_module, tiny_run):
    record, _ = tiny_run
    amp = amp_precision(torch.device("cpu"), True)  # bf16, or fp32 on a CPU without native bf16
    assert [v["name"] for v in record["variants"]] == ["eager-fp32", f"eager-{amp}-channels-last"]
    assert [v["precision"] for v in record["variants"]] == ["fp32", amp]
    assert set(record["matrix_rates"]) == {"fp32", amp}  # only the precisions the steps run in
    for rate in record["matrix_rates"].values():  # the faster of the two ways, its best call and its median one
        assert rate["best_gflops"] == max(rate["mm_best_gflops"], rate["conv1x1_best_gflops"])
        assert rate["best_gflops"] == rate[f"{rate['way']}_best_gflops"] >= rate["median_gflops"] > 0
    flops = record["training_flops_per_sample"]
    assert flops == pytest.approx(215.9e6, rel=0.01)
    for v in record["variants"]:
        p = v["profile"]
        assert set(p["categories"]) == set(profile_module.CATEGORIES)
        assert sum(p["categories"].values()) == pytest.approx(p["total_ms"], rel=1e-6)
        assert p["total_ms"] == pytest.approx(p["wall_ms"], rel=0.2)  # the step wrapper covers Python too
        assert p["categories"]["convolution backward"] > 0 and p["categories"]["optimizer"] > 0
        assert len(v["step_times_ms"]) == 1 and v["ms_per_step"] == v["step_times_ms"][0] > 0  # --steps 1
        assert v["images_per_s"] == pytest.approx(16 * 1000 / v["ms_per_step"])  # --batch-size 16
        assert v["gflops"] == pytest.approx(flops * v["images_per_s"] / 1e9)
        assert v["matrix_share"] == pytest.approx(v["gflops"] / record["matrix_rates"][v["precision"]]["best_gflops"])
        assert p["top_ops"] and all(op["category"] in profile_module.CATEGORIES for op in p["top_ops"])


@pytest.mark.parametrize("native_bf16", [True, False])
def test_only_the_precisions_the_steps_run_in_get_a_matrix_rate(profile_module, capsys, tmp_path, monkeypatch,
                                                                 native_bf16):
    from alexnet_perf import device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: native_bf16)
    code, _, _ = _cli(profile_module, capsys, *TINY, "--json", str(tmp_path / "p.json"), "--results-file",
                      str(tmp_path / "RESULTS.md"))
    record = json.loads((tmp_path / "p.json").read_text())
    precisions = {"fp32", "bf16"} if native_bf16 else {"fp32"}
    assert code == 0 and {v["precision"] for v in record["variants"]} == set(record["matrix_rates"]) == precisions
    section = (tmp_path / "RESULTS.md").read_text()
    assert ("bf16 **" in section) == native_bf16 and "fp32 **" in section


def test_results_section_replaces_only_itself(tiny_run):
    _, text = tiny_run
    assert "<!-- begin other -->\nkept\n<!-- end other -->" in text
    assert "<!-- begin training-step-profile -->" in text and "share of matrix rate" in text


def _event(name: str, parent: FunctionEvent | None = None) -> FunctionEvent:
    event = FunctionEvent(id=0, name=name, thread=0, start_us=0, end_us=1)
    event.cpu_parent = parent
    return event


@pytest.mark.parametrize("name, parent, expected", [
    ("aten::convolution_backward", "## Call CompiledFxGraph fabc ##", "convolution backward"),
    ("aten::mkldnn_convolution", None, "convolution forward"),
    ("aten::clamp_min_", "aten::relu_", "relu"),
    ("aten::_foreach_add_", "Optimizer.step#SGD.step", "optimizer"),
    ("aten::copy_", "aten::conv2d", "copies/fills"),
    ("aten::scatter_reduce_", "CompiledFunctionBackward", "compiled kernels (inductor graphs)"),
    ("aten::bernoulli_", "aten::feature_dropout", "other"),
])
def test_categorize(profile_module, name, parent, expected):
    assert profile_module.categorize(_event(name, _event(parent) if parent else None)) == expected


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--matrix-size", "8"], "--matrix-size must be >= 16"),
])
def test_bad_flag_exits_2(profile_module, capsys, args, message):
    code, _, err = _cli(profile_module, capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_unwritable_json_refused_before_work(profile_module, capsys, tmp_path):
    code, out, err = _cli(profile_module, capsys, *TINY, "--json", str(tmp_path), "--no-results")
    assert code == 2 and "--json" in err and "warming up" not in out


def test_a_full_disk_at_the_end_is_one_line_and_keeps_the_previous_json(profile_module, capsys, tmp_path,
                                                                        monkeypatch):
    previous = tmp_path / "p.json"
    previous.write_text('{"previous": true}')
    full_disk(monkeypatch, room=0)  # the atomic write's temporary file fills the disk, after the profile ran
    code, out, err = _cli(profile_module, capsys, *TINY, "--json", str(previous), "--no-results")
    assert code == 2 and err.count("\n") == 1 and "the previous file, if any, is unchanged" in err
    assert err.startswith(f"{profile_module.PROG}: error: cannot write {previous}: No space left")
    assert "share of matrix rate" in out and "wrote" not in out and previous.read_text() == '{"previous": true}'
