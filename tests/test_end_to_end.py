"""Real runs on a slice of the real CIFAR-10: the commands users type, end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_perf.checkpoint import last_path, load_checkpoint
from alexnet_perf.evaluate import save_confusion_png

pytestmark = pytest.mark.slow


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_epochs_logged(log_dir: Path, history: list[dict]) -> None:
    """The one TensorBoard run under log_dir holds every epoch's figures of the run's history, at steps 1, 2, ..."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = log_dir.glob("run_*")
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = {tag for tag in events.Tags()["scalars"] if tag.startswith("epoch/")}
    assert tags == {f"epoch/{name}" for name in history[0] if name != "epoch"}
    for tag in tags:
        points = events.Scalars(tag)
        assert [p.step for p in points] == [h["epoch"] for h in history], tag
        assert [p.value for p in points] == pytest.approx([h[tag.removeprefix("epoch/")] for h in history],
                                                          rel=1e-6), tag


def assert_confusion_png(path: Path, confusion: list[list[int]], title: str) -> None:
    """path is the heat map evaluate draws of this confusion matrix, and a different matrix draws differently."""
    drawn = pixels(path)
    save_confusion_png(confusion, path.parent / "redrawn.png", title)
    assert drawn.shape == (600, 700, 3) and (pixels(path.parent / "redrawn.png") == drawn).all()
    save_confusion_png([row[::-1] for row in confusion], path.parent / "mirrored.png", title)
    assert (pixels(path.parent / "mirrored.png") != drawn).any()


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
    history = load_checkpoint(last_path(ckpt))["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert_epochs_logged(tb, history)

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
    assert printed == [printed[0]] and figure in printed[0]  # fast, the default, is scored without TTA
    assert_confusion_png(tmp_path / "cm.png", confusion, f"{ckpt.name}: {100 * snap['accuracy']:.2f}% test accuracy")
