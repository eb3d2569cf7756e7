"""Evaluation: the one loop that scores a model on a loader (used by training's validation too) and the
`python -m alexnet_perf.evaluate` command that prints the seed's test snapshot for a checkpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import flags
from .atomic import check_writable, write_text_atomic
from .checkpoint import DEFAULT_CHECKPOINT, load_model
from .data import CLASSES, DATA_DIR_HELP, load_cifar10
from .device import amp_precision, autocast, keep_freed_memory, resolve_device, set_tf32, synchronize
from .errors import UserError
from .figures import save_figure
from .loader import DeviceLoader

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PROG = "python -m alexnet_perf.evaluate"
DESCRIPTION = ("Evaluate a checkpoint on the 10,000 CIFAR-10 test images: accuracy, loss, latency, "
               "per-class recall, confusion matrix.")
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
def evaluate_model(model: torch.nn.Module, loader: DeviceLoader, precision: str = "fp32",
                   label_smoothing: float = 0.0, tta: bool = False, num_classes: int = 10) -> EvalMetrics:
    """Score model (in eval mode) on every sample of loader; the time includes preprocessing on the device. Nothing
    is read back to the host until the pass ends, so a GPU is never waited for between batches."""
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
        confusion.index_add_(0, y * num_classes + logits.argmax(1), torch.ones_like(y))  # bincount would read
        # the largest index back to the host: two GPU synchronisations per batch
    synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    matrix = confusion.view(num_classes, num_classes)
    total = int(matrix.sum())
    return EvalMetrics(loss=float(loss_sum) / max(total, 1), correct=int(matrix.diagonal().sum()), total=total,
                       seconds=seconds, confusion=matrix.tolist())


TTA_CHOICES = ("auto", "on", "off")


@dataclass
class EvalConfig:
    checkpoint: str = flags.option(DEFAULT_CHECKPOINT, "checkpoint to evaluate (loaded weights-only)")
    data_dir: str | None = flags.option(None, DATA_DIR_HELP)
    download: bool = flags.option(False, "download CIFAR-10 if it is missing")
    batch_size: int = flags.option(EVAL_BATCH_SIZE, "evaluation batch size", at_least=1)
    device: str = flags.option("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = flags.option(False, "evaluate under bf16/fp16 autocast (default: fp32, the reference precision)")
    channels_last: bool = flags.option(True, "feed the network channels-last tensors")
    tta: str = flags.option("auto", "flip test-time augmentation (the mean logits of each image and its mirror image) "
                                  "as a second figure beside the plain one: auto = when the checkpoint's recipe is "
                                  "scored with it (recorded in the checkpoint), on, off", choices=TTA_CHOICES)
    json: str = flags.option("", "write the snapshot as JSON to this path (empty string: don't)")
    confusion_png: str = flags.option(".cache/eval/confusion_matrix.png", "write the confusion matrix as a PNG here "
                                                                        "(empty string: don't)")


def check_config(cfg: EvalConfig) -> None:
    """The mistakes visible before loading anything: numbers out of range and output paths that cannot be written."""
    flags.validate(cfg)
    for flag, path in (("--json", cfg.json), ("--confusion-png", cfg.confusion_png)):
        if path:
            check_writable(path, flag)


def _recorded(ckpt: dict[str, Any], source: str, name: str, default: Any, valid: Callable[[Any], bool],
              want: str) -> Any:
    """A field of the training run's recorded configuration, checked; `default` when the checkpoint lacks it."""
    config = ckpt.get("config")
    value = config.get(name, default) if isinstance(config, dict) else default
    if not valid(value):
        raise UserError(f"{source}: config.{name} must be {want}, got {value!r}")
    return value


def checkpoint_label_smoothing(ckpt: dict[str, Any], source: str) -> float:
    """The training run's label smoothing (the loss is reported with it, as the seed did); 0 when not recorded."""
    return float(_recorded(ckpt, source, "label_smoothing", 0.0,
                           lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < 1,
                           "a number in [0, 1)"))


def checkpoint_tta(ckpt: dict[str, Any], source: str) -> bool:
    """Whether the checkpoint's recipe is scored with flip test-time augmentation (its config's tta); False when
    not recorded."""
    return _recorded(ckpt, source, "tta", False, lambda v: isinstance(v, bool), "true or false")


def snapshot(metrics: EvalMetrics, **context) -> dict:
    """The seed's evaluation snapshot as a plain dict (what --json writes)."""
    return {**context, "accuracy": metrics.accuracy, "correct": metrics.correct, "total": metrics.total,
            "loss": metrics.loss, "latency_s": metrics.seconds, "ms_per_sample": metrics.ms_per_sample,
            "per_class_recall": dict(zip(CLASSES, metrics.per_class_recall())), "confusion": metrics.confusion}


def format_snapshot(snap: dict) -> str:
    """The test report: accuracy (and, when scored, accuracy with flip TTA), loss, latency, per-class recall."""
    tta = snap.get("tta")
    lines = [f"Test accuracy:           {100 * snap['accuracy']:.2f}% ({snap['correct']}/{snap['total']})"]
    if tta:
        lines.append(f"Test accuracy, flip TTA: {100 * tta['accuracy']:.2f}% ({tta['correct']}/{tta['total']})"
                     + ("  (this recipe's measure)" if snap.get("recipe_uses_tta") else ""))
    lines += [f"Test loss:               {snap['loss']:.4f}" + (f" (flip TTA {tta['loss']:.4f})" if tta else ""),
              f"Latency:                 {snap['latency_s']:.3f} s total, {snap['ms_per_sample']:.4f} ms/sample",
              "Per-class recall:" + ("  plain  flip TTA" if tta else "")]
    for name, r in snap["per_class_recall"].items():
        lines.append(f"  {name:<11s} {100 * r:5.1f}%" + (f"  {100 * tta['per_class_recall'][name]:5.1f}%" if tta
                                                         else ""))
    return "\n".join(lines)


def save_confusion_png(confusion: list[list[int]], path: str | Path, title: str = "") -> None:
    """The confusion matrix as an annotated heat map (rows: true class, columns: predicted), written atomically."""
    peak = max(max(row) for row in confusion) or 1

    def draw(ax: Axes) -> None:
        im = ax.imshow(confusion, cmap="Blues")
        ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i, row in enumerate(confusion):
            for j, v in enumerate(row):
                ax.text(j, i, v, ha="center", va="center", fontsize=7, color="white" if v > peak / 2 else "black")
        ax.figure.colorbar(im)

    save_figure(path, (7, 6), draw)


def score_model(model: torch.nn.Module, ckpt: dict[str, Any], source: str, images: np.ndarray, labels: np.ndarray,
                device: torch.device, *, tta: str = "auto", batch_size: int = EVAL_BATCH_SIZE, amp: bool = False,
                channels_last: bool = True) -> dict:
    """Score a loaded checkpoint on (images, labels): the plain snapshot, with the flip-TTA figures under "tta"
    when tta is "on", or "auto" and the checkpoint's recipe is scored with TTA. The one test scoring of the
    project: `evaluate`, the end of every training run and time_to_accuracy all come here."""
    label_smoothing = checkpoint_label_smoothing(ckpt, source)
    recipe_uses_tta = checkpoint_tta(ckpt, source)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    loader = DeviceLoader(images, labels, batch_size, device, channels_last=channels_last)
    precision = amp_precision(device, amp)
    set_tf32(False)  # fp32 means fp32 on GPUs too (cuDNN's default would run the convolutions in TF32)
    plain = evaluate_model(model, loader, precision, label_smoothing=label_smoothing, num_classes=len(CLASSES))
    with_tta = None
    if tta == "on" or (tta == "auto" and recipe_uses_tta):
        with_tta = snapshot(evaluate_model(model, loader, precision, label_smoothing=label_smoothing, tta=True,
                                           num_classes=len(CLASSES)))
    return snapshot(plain, checkpoint=source, device=str(device), batch_size=batch_size,
                    precision=precision, tf32=False,
                    loss_label_smoothing=label_smoothing, epoch=ckpt.get("epoch"), recipe_uses_tta=recipe_uses_tta,
                    tta=with_tta)


def score_checkpoint(checkpoint: str | Path, data_dir: str | None, device: torch.device, **options: Any) -> dict:
    """Load the checkpoint and the CIFAR-10 test split, and score it (score_model's options)."""
    model, ckpt = load_model(checkpoint, map_location=device)
    data = load_cifar10(data_dir, test_only=True)
    return score_model(model, ckpt, str(checkpoint), data.test_images, data.test_labels, device, **options)


def run_evaluation(cfg: EvalConfig) -> dict:
    """Check the configuration, load the checkpoint (before the data: a bad one fails first) and the test split,
    and score it: the snapshot. On a CPU the process keeps freed memory for reuse (device.keep_freed_memory): each
    batch of 500 then reuses the last one's pages instead of faulting in 60 MB of fresh ones (3.7–3.9 → 2.7–3.0 s for
    the 10,000 test images in fp32 here)."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    model, ckpt = load_model(cfg.checkpoint, map_location=device)
    data = load_cifar10(cfg.data_dir, download=cfg.download, test_only=True)
    return score_model(model, ckpt, str(cfg.checkpoint), data.test_images, data.test_labels, device, tta=cfg.tta,
                       batch_size=cfg.batch_size, amp=cfg.amp, channels_last=cfg.channels_last)


def main(cfg: EvalConfig) -> int:
    snap = run_evaluation(cfg)
    print(format_snapshot(snap))
    if cfg.json:
        write_text_atomic(cfg.json, json.dumps(snap, indent=2))
        print(f"wrote {cfg.json}")
    if cfg.confusion_png:
        title = f"{Path(cfg.checkpoint).name}: {100 * snap['accuracy']:.2f}% test accuracy"
        save_confusion_png(snap["confusion"], cfg.confusion_png, title)
        print(f"wrote {cfg.confusion_png}")
    return 0


if __name__ == "__main__":
    flags.exit_with(flags.run(EvalConfig, main, PROG, DESCRIPTION))
