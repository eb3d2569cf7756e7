"""Evaluation: the one loop that scores a model on a loader (used by training's validation too) and the
`python -m alexnet_perf.evaluate` command that prints the seed's test snapshot for a checkpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import cli
from .atomic import check_writable, write_atomic, write_text_atomic
from .checkpoint import DEFAULT_CHECKPOINT, load_model
from .data import CLASSES, DATA_DIR_HELP, DeviceLoader, load_cifar10
from .errors import UserError
from .runtime import amp_dtype, autocast, resolve_device, synchronize

EVAL_BATCH_SIZE = 500  # test and validation passes: large enough to amortise per-call overhead, small in memory


@dataclass
class EvalMetrics:
    """Loss and accuracy of one pass, with the confusion matrix (rows: true class, columns: predicted)."""

    loss: float
    correct: int
    total: int
    seconds: float
    confusion: list[list[int]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)

    @property
    def ms_per_sample(self) -> float:
        return 1000 * self.seconds / max(self.total, 1)

    def per_class_recall(self) -> list[float]:
        return [row[i] / max(sum(row), 1) for i, row in enumerate(self.confusion)]


def predict(model: torch.nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Logits; with tta, the mean of the logits of the images and of their mirror images."""
    logits = model(x)
    if tta:
        logits = (logits + model(x.flip(3))) / 2
    return logits


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader: DeviceLoader, precision: torch.dtype | None = None,
                   label_smoothing: float = 0.0, tta: bool = False, num_classes: int = 10) -> EvalMetrics:
    """Score model (in eval mode) on every sample of loader; the time includes preprocessing on the device."""
    was_training = model.training
    model.eval()
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    synchronize(device)
    start = time.perf_counter()
    for x, y in loader:
        with autocast(device, precision):
            logits = predict(model, x, tta).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing)
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    matrix = confusion.view(num_classes, num_classes)
    total = int(matrix.sum())
    return EvalMetrics(loss=float(loss_sum) / max(total, 1), correct=int(matrix.diagonal().sum()), total=total,
                       seconds=seconds, confusion=matrix.tolist())


@dataclass
class EvalConfig:
    checkpoint: str = cli.option(DEFAULT_CHECKPOINT, "checkpoint to evaluate (loaded weights-only)")
    data_dir: str | None = cli.option(None, DATA_DIR_HELP)
    download: bool = cli.option(False, "download CIFAR-10 if it is missing")
    batch_size: int = cli.option(EVAL_BATCH_SIZE, "evaluation batch size", at_least=1)
    device: str = cli.option("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = cli.option(False, "evaluate under bf16/fp16 autocast (default: fp32, the reference precision)")
    channels_last: bool = cli.option(True, "feed the network channels-last tensors")
    tta: bool = cli.option(False, "test-time augmentation: average the logits of each image and its mirror image")
    json: str = cli.option("", "write the snapshot as JSON to this path (empty string: don't)")
    confusion_png: str = cli.option(".cache/eval/confusion_matrix.png", "write the confusion matrix as a PNG here "
                                                                        "(empty string: don't)")


def check_config(cfg: EvalConfig) -> None:
    """The mistakes visible before loading anything: numbers out of range and output paths that cannot be written."""
    cli.validate(cfg)
    for flag, path in (("--json", cfg.json), ("--confusion-png", cfg.confusion_png)):
        if path:
            check_writable(path, flag)


def checkpoint_label_smoothing(ckpt: dict[str, Any], source: str) -> float:
    """The training run's label smoothing (the loss is reported with it, as the seed did); 0 when not recorded."""
    config = ckpt.get("config")
    value = config.get("label_smoothing", 0.0) if isinstance(config, dict) else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise UserError(f"{source}: config.label_smoothing must be a number in [0, 1), got {value!r}")
    return float(value)


def snapshot(metrics: EvalMetrics, **context) -> dict:
    """The seed's evaluation snapshot as a plain dict (what --json writes)."""
    return {**context, "accuracy": metrics.accuracy, "correct": metrics.correct, "total": metrics.total,
            "loss": metrics.loss, "latency_s": metrics.seconds, "ms_per_sample": metrics.ms_per_sample,
            "per_class_recall": dict(zip(CLASSES, metrics.per_class_recall())), "confusion": metrics.confusion}


def format_snapshot(snap: dict) -> str:
    lines = [f"Test accuracy: {100 * snap['accuracy']:.2f}% ({snap['correct']}/{snap['total']})",
             f"Test loss:     {snap['loss']:.4f}",
             f"Latency:       {snap['latency_s']:.3f} s total, {snap['ms_per_sample']:.4f} ms/sample",
             "Per-class recall:"]
    lines += [f"  {name:<11s} {100 * r:5.1f}%" for name, r in snap["per_class_recall"].items()]
    return "\n".join(lines)


def save_confusion_png(confusion: list[list[int]], path: str | Path, title: str = "") -> None:
    """The confusion matrix as an annotated heat map (rows: true class, columns: predicted), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            ax.text(j, i, v, ha="center", va="center", fontsize=7, color="white" if v > peak / 2 else "black")
    fig.colorbar(im)
    fig.tight_layout()
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def run_evaluation(cfg: EvalConfig) -> dict:
    """Check the configuration, load the checkpoint and the test split, and score the model: the snapshot."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    model, ckpt = load_model(cfg.checkpoint, map_location=device)
    if model.classifier[-1].out_features != len(CLASSES):
        raise UserError(f"{cfg.checkpoint}: the network predicts {model.classifier[-1].out_features} classes, "
                        f"CIFAR-10 has {len(CLASSES)}")
    label_smoothing = checkpoint_label_smoothing(ckpt, cfg.checkpoint)
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    data = load_cifar10(cfg.data_dir, download=cfg.download)
    loader = DeviceLoader(data.test_images, data.test_labels, cfg.batch_size, device, channels_last=cfg.channels_last)
    precision = amp_dtype(device, cfg.amp)
    metrics = evaluate_model(model, loader, precision, label_smoothing=label_smoothing, tta=cfg.tta,
                             num_classes=len(CLASSES))
    return snapshot(metrics, checkpoint=str(cfg.checkpoint), device=str(device), batch_size=cfg.batch_size,
                    precision=str(precision or torch.float32).removeprefix("torch."), tta=cfg.tta,
                    loss_label_smoothing=label_smoothing, epoch=ckpt.get("epoch"))


def write_output(path: str | Path, what: str, write: Callable[[], None]) -> None:
    """Run write(); a write that fails anyway (disk full, folder removed meanwhile) is one line, not a traceback."""
    try:
        write()
    except OSError as e:
        reason = e.strerror or str(e)
        raise UserError(f"cannot write {what} {path} ({reason}); the previous file, if any, is unchanged") from None
    print(f"wrote {path}")


def main(cfg: EvalConfig) -> int:
    snap = run_evaluation(cfg)
    print(format_snapshot(snap))
    if cfg.json:
        write_output(cfg.json, "--json", lambda: write_text_atomic(cfg.json, json.dumps(snap, indent=2)))
    if cfg.confusion_png:
        title = f"{Path(cfg.checkpoint).name}: {100 * snap['accuracy']:.2f}% test accuracy"
        write_output(cfg.confusion_png, "--confusion-png",
                     lambda: save_confusion_png(snap["confusion"], cfg.confusion_png, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(EvalConfig, main, "python -m alexnet_perf.evaluate",
                             "Evaluate a checkpoint on the 10,000 CIFAR-10 test images: accuracy, loss, latency, "
                             "per-class recall, confusion matrix."))
