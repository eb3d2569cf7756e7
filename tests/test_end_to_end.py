"""Real runs on a slice of the real CIFAR-10: the commands users type, end to end."""

import json
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow


def test_compiled_amp_training_then_evaluation_on_real_cifar(real_cifar_dir, tmp_path):
    ckpt, tb = tmp_path / "models" / "alexnet_cifar.pth", tmp_path / "tb"
    train = subprocess.run(
        [sys.executable, "-m", "alexnet_perf.train", "--compile", "--amp", "--augment", "--epochs", "3",
         "--limit-train", "6144", "--val-size", "2000", "--lr", "0.05", "--data-dir", str(real_cifar_dir),
         "--checkpoint", str(ckpt), "--log-dir", str(tb)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "done: kept epoch" in train.stdout and "(best val accuracy" in train.stdout
    saved = torch.load(ckpt, weights_only=True)
    assert saved["config"]["compile"] and saved["config"]["amp"]
    assert list(tb.glob("run_*/events.out.tfevents.*"))

    report = tmp_path / "eval.json"
    evaluate = subprocess.run(
        [sys.executable, "-m", "alexnet_perf.evaluate", "--checkpoint", str(ckpt), "--data-dir", str(real_cifar_dir),
         "--json", str(report), "--confusion-png", str(tmp_path / "cm.png")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    snap = json.loads(report.read_text())
    assert snap["total"] == 10_000 and snap["accuracy"] > 0.35  # chance is 0.10
    confusion = snap["confusion"]
    assert [sum(row) for row in confusion] == [1000] * 10  # the test split holds 1,000 images of each class
    assert snap["correct"] == sum(confusion[i][i] for i in range(10))
    assert list(snap["per_class_recall"].values()) == [confusion[i][i] / 1000 for i in range(10)]
    figure = f"{100 * snap['accuracy']:.2f}% ({snap['correct']}/10000)"
    assert figure in evaluate.stdout
    printed = [line for line in train.stdout.splitlines() if line.startswith("Test accuracy")]
    assert printed == [line for line in evaluate.stdout.splitlines() if line.startswith("Test accuracy")]
    assert figure in printed[0] and "flip TTA" in printed[1]  # the recipe (fast, the default) is scored with TTA
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
