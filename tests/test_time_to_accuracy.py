"""benchmarks/time_to_accuracy.py on synthetic data: one tiny run end to end, and its report."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_accuracy.py"


@pytest.fixture(scope="module")
def tta_module():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_run_times_every_phase_and_scores_test_with_and_without_tta(tta_module, synthetic_cifar, tmp_path):
    run = tta_module.run_once("fast", 0, str(synthetic_cifar), tmp_path, epochs=1, batch_size=16, device="cpu",
                              amp=False)
    assert run["epochs"] == 1 and run["config"]["recipe"] == "fast" and run["config"]["whiten_init"]
    assert 0.0 <= run["test_accuracy"] <= 1.0 and 0.0 <= run["test_accuracy_tta"] <= 1.0
    assert run["wall_seconds"] >= run["train_seconds"] > 0 and run["test_eval_seconds"] > 0
    assert len(run["per_class_recall"]) == 10


def test_summary_and_table_report_mean_and_sd(tta_module):
    runs = [{"seed": s, "test_accuracy": a, "test_accuracy_tta": a + 0.01, "wall_seconds": 300.0 + s,
             "data_seconds": 0.1, "train_seconds": 290.0, "val_seconds": 0.0, "test_eval_seconds": 8.0, "epochs": 10,
             "images_per_second": 1500.0} for s, a in enumerate((0.83, 0.84, 0.85))]
    summary = tta_module.summarize(runs)
    assert summary["test_accuracy"]["mean"] == pytest.approx(0.84)
    assert summary["test_accuracy"]["sd"] == pytest.approx(0.01)
    table = tta_module.markdown("fast", runs, summary, "python benchmarks/time_to_accuracy.py", "2026-11-29")
    assert "**84.00 ± 1.00 %**" in table and "| 2 | 85.00 % | 86.00 % |" in table
