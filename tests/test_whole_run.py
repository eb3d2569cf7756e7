"""benchmarks/whole_run.py: the order and caches of its runs, its summary and section (with a stand-in runner),
and one real train process timed and read."""

import json
import os
from pathlib import Path

import pytest

from alexnet_perf import flags
from alexnet_perf.errors import UserError
from alexnet_perf.evaluate import format_snapshot

from conftest import benchmark_script


@pytest.fixture(scope="module")
def whole_run():
    yield from benchmark_script("whole_run")


class StandIn:
    """A runner that records each command and its compile cache, and answers with given seconds and accuracy."""

    def __init__(self, seconds: dict[str, list[float]]) -> None:
        self.seconds, self.calls = {k: list(v) for k, v in seconds.items()}, []

    def __call__(self, command: list[str], env: dict[str, str]) -> tuple[float, str]:
        cache = Path(env["TORCHINDUCTOR_CACHE_DIR"])
        compiled = "--compile" in command
        mode = ("cold" if not any(c["compiled"] for c in self.calls) else "warm") if compiled else "eager"
        self.calls.append({"compiled": compiled, "cache": cache, "cache_existed": cache.exists()})
        if compiled:
            cache.mkdir(parents=True, exist_ok=True)
        return (self.seconds[mode].pop(0), "epoch 1/1  train loss 2.0  2500 img/s\ndone: ...\n"
                "Test accuracy:           83.25% (8325/10000)\n")


def test_one_cold_compiled_run_comes_first_then_pairs_alternate_and_compiled_runs_share_its_new_cache(
        whole_run, synthetic_cifar, tmp_path):
    runner = StandIn({"cold": [60.0], "warm": [20.0, 22.0], "eager": [21.0, 23.0]})
    cfg = whole_run.WholeRunConfig(pairs=2, data_dir=str(synthetic_cifar), results="")
    assert whole_run.main(cfg, runner) == 0
    assert [c["compiled"] for c in runner.calls] == [True, False, True, True, False]
    assert runner.calls[0]["cache_existed"] is False  # the first compiled run starts from empty caches
    assert len({c["cache"] for c in runner.calls}) == 1 and runner.calls[2]["cache_existed"]


def test_summary_is_compiled_over_eager_medians_and_lands_in_json_and_section(whole_run, synthetic_cifar, tmp_path,
                                                                              capsys):
    runner = StandIn({"cold": [60.0], "warm": [20.0, 30.0, 25.0], "eager": [24.0, 26.0, 40.0]})
    results, record = tmp_path / "RESULTS.md", tmp_path / "runs.json"
    cfg = whole_run.WholeRunConfig(pairs=3, data_dir=str(synthetic_cifar), results=str(results), json=str(record))
    whole_run.main(cfg, runner)
    saved = json.loads(record.read_text())
    summary = saved["summary"]
    assert saved["runs"][0]["epoch_lines"] == ["epoch 1/1  train loss 2.0  2500 img/s"]
    assert summary["compiled_median"] == 25.0 and summary["eager_median"] == 26.0
    assert summary["ratio"] == pytest.approx(25 / 26) and summary["cold_seconds"] == 60.0
    assert summary["pair_ratios"] == pytest.approx([20 / 24, 30 / 26, 25 / 40])
    text = results.read_text()
    assert "<!-- begin whole-run-compile -->" in text and "compiled/eager **0.96×**" in text
    assert "| 1 | compiled, empty caches | 60.0 | 83.25 % |" in text
    assert "compiled/eager **0.96×**" in capsys.readouterr().out


def test_the_accuracy_is_read_from_the_report_train_prints(whole_run):
    snap = {"accuracy": 0.8347, "correct": 8347, "total": 10000, "loss": 0.61, "latency_s": 1.0,
            "ms_per_sample": 0.1, "per_class_recall": {"cat": 0.9}, "tta": {"accuracy": 0.8455, "correct": 8455,
                                                                          "total": 10000, "loss": 0.6,
                                                                          "per_class_recall": {"cat": 0.91}}}
    assert whole_run.printed_accuracy("epoch 6/6 ...\n" + format_snapshot(snap)) == pytest.approx(0.8347)
    with pytest.raises(UserError, match="no test accuracy"):
        whole_run.printed_accuracy("done\n")


def test_missing_data_is_refused_before_any_run(whole_run, tmp_path):
    runner = StandIn({})
    with pytest.raises(UserError):
        whole_run.main(whole_run.WholeRunConfig(data_dir=str(tmp_path / "nowhere"), results=""), runner)
    assert runner.calls == []


def test_train_args_with_unbalanced_quotes_are_refused_in_one_line_before_any_run(whole_run, synthetic_cifar):
    runner = StandIn({})
    cfg = whole_run.WholeRunConfig(data_dir=str(synthetic_cifar), train_args='--epochs "1', results="")
    with pytest.raises(UserError, match="--train-args .*No closing quotation"):
        whole_run.main(cfg, runner)
    assert runner.calls == []


def test_a_real_train_process_is_timed_and_its_accuracy_read(whole_run, synthetic_cifar, tmp_path):
    cfg = whole_run.WholeRunConfig(data_dir=str(synthetic_cifar), train_args="--epochs 1 --limit-train 128")
    command = whole_run.train_command(cfg, False, tmp_path / "run")
    seconds, output = whole_run.run_process(command, dict(os.environ))
    assert seconds > 0 and 0 <= whole_run.printed_accuracy(output) <= 1
    assert (tmp_path / "run" / "model.pth").is_file()


def test_a_failing_train_process_is_one_line_with_its_status(whole_run, synthetic_cifar, tmp_path):
    cfg = whole_run.WholeRunConfig(data_dir=str(synthetic_cifar), train_args="--epochs 0")
    with pytest.raises(UserError, match=r"exited with status 2: .*--epochs") as caught:
        whole_run.run_process(whole_run.train_command(cfg, False, tmp_path / "run"), dict(os.environ))
    assert "\n" not in str(caught.value)


def test_the_command_line_reproduces_the_configuration(whole_run):
    cfg = whole_run.WholeRunConfig(pairs=3, data_dir="../shared/cifar10", results="")
    assert flags.command_line(whole_run.PROG, cfg).startswith("python benchmarks/whole_run.py --pairs 3")
