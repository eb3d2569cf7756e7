"""Training: `python -m alexnet_perf.train` (the seed's recipe by default) and the importable train(config).

One loop for every configuration: eager or torch.compile, fp32 or bf16/fp16 autocast, channels-last or not.
Checkpoints are written atomically each epoch (best on validation accuracy, and the last one for --resume);
Ctrl-C saves the exact mid-epoch state, and --resume continues as if the run had never stopped.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from . import cli
from .checkpoint import DEFAULT_CHECKPOINT, FORMAT, last_path, load_checkpoint, save_atomic
from .data import (CLASSES, DATA_DIR_HELP, DeviceLoader, load_cifar10, normalize, preprocessing,
                   split_train_val)
from .errors import UserError
from .ema import EMA
from .evaluate import EVAL_BATCH_SIZE, EvalMetrics, evaluate_model
from .init import whiten_first_conv
from .model import AlexNetCifar
from .recipes import RECIPES
from .runtime import amp_dtype, autocast, resolve_device, seed_everything, synchronize


SCHEDULES = ("cosine-epoch", "cosine", "linear")


@dataclass
class TrainConfig:
    recipe: str = cli.option("seed", "named recipe whose settings become the defaults (flags still override): "
                                     "seed = the original 500-epoch run, fast = quickest to the seed's 83.18%% on a "
                                     "CPU, best = highest accuracy", choices=sorted(RECIPES))
    epochs: int = cli.option(500, "number of epochs")
    batch_size: int = cli.option(128, "training batch size (the last partial batch of an epoch is dropped)")
    lr: float = cli.option(0.075, "peak SGD learning rate")
    momentum: float = cli.option(0.9, "SGD momentum")
    nesterov: bool = cli.option(False, "Nesterov momentum")
    schedule: str = cli.option("cosine-epoch", "learning-rate schedule: cosine-epoch (the seed's CosineAnnealingLR, "
                                               "stepped per epoch), cosine or linear (per step, to 0)",
                               choices=SCHEDULES)
    warmup_epochs: float = cli.option(0.0, "linear warm-up from 0 over this many epochs (per-step schedules)")
    weight_decay: float = cli.option(2e-3, "SGD weight decay (L2)")
    decay_norm_and_bias: bool = cli.option(True, "apply weight decay to BatchNorm weights and biases too (the seed)")
    bn_momentum: float = cli.option(0.1, "BatchNorm running-statistics momentum")
    whiten_init: bool = cli.option(False, "initialise the first convolution as a patch-whitening filter bank "
                                          "computed from 5,000 training images (airbench's trick)")
    ema: float = cli.option(0.0, "keep an exponential moving average of the weights with this per-step decay and "
                                 "validate/save it (0: off)")
    label_smoothing: float = cli.option(0.1, "label smoothing of the cross-entropy loss")
    clip_grad_norm: float = cli.option(1.0, "clip the gradient's global L2 norm to this (0: no clipping)")
    augment: bool = cli.option(False, "random crop (zero padding) + horizontal flip, batched on the device")
    crop_padding: int = cli.option(4, "padding of the random crop with --augment (the seed's recipe: 4 px)")
    tta: bool = cli.option(False, "validate with test-time augmentation (mean logits of image and mirror image)")
    val_size: int = cli.option(10_000, "last N training images held out for validation (0: train on all 50,000)")
    limit_train: int = cli.option(0, "train on only the first N training images, for quick runs (0: all)")
    device: str = cli.option("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    compile: bool = cli.option(False, "torch.compile the network (forward and backward) for training")
    amp: bool = cli.option(False, "mixed precision: bf16 autocast on CPU/modern GPUs, fp16 + GradScaler otherwise")
    channels_last: bool = cli.option(True, "channels-last memory layout for the network and its inputs")
    seed: int = cli.option(0, "seed for initialisation, shuffling, augmentation and dropout")
    deterministic: bool = cli.option(False, "use deterministic algorithms only (slower on GPU)")
    data_dir: str | None = cli.option(None, DATA_DIR_HELP)
    download: bool = cli.option(False, "download CIFAR-10 if it is missing")
    checkpoint: str = cli.option(DEFAULT_CHECKPOINT, "best-validation checkpoint path; the "
                                                                     "last-epoch one is written beside it (*.last.pth)")
    resume: bool = cli.option(False, "continue the run saved in the last checkpoint (its configuration is kept)")
    tensorboard: bool = cli.option(True, "log to TensorBoard under --log-dir")
    log_dir: str = cli.option(".cache/tensorboard/training/alexnet", "TensorBoard folder; each run gets run_<time>")
    log_every: int = cli.option(20, "update the progress bar and batch-wise TensorBoard scalars every N steps")


# Settings that change how a run executes but not what it computes: --resume may change them.
RUNTIME_FIELDS = ("device", "compile", "data_dir", "download", "checkpoint", "resume", "tensorboard", "log_every")


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class TrainResult:
    best_val_accuracy: float | None
    best_epoch: int
    epochs_done: int
    wall_seconds: float
    data_seconds: float
    train_seconds: float
    eval_seconds: float
    images_per_second: float
    interrupted: bool
    checkpoint: str
    history: list[dict] = field(default_factory=list)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, schedule: str = "cosine-epoch",
              warmup_epochs: float = 0.0) -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based).

    cosine-epoch: the seed's CosineAnnealingLR(T_max=epochs, eta_min=0), stepped once per epoch (no warm-up).
    cosine / linear: per step from the end of the linear warm-up down to 0 at the last step.
    """
    if schedule == "cosine-epoch":
        return (1 + math.cos(math.pi * (step // steps_per_epoch) / epochs)) / 2
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 1 - progress if schedule == "linear" else (1 + math.cos(math.pi * progress)) / 2


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """One group, or two when BatchNorm weights and all biases (the 1-d tensors) are exempt from weight decay."""
    params = list(model.parameters())
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               criterion: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: torch.dtype | None,
               clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast(x.device, precision):
        logits = model(x)
    loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), (logits.argmax(1) == y).sum()


class _Logger:
    """TensorBoard (optional) plus progress output: a live bar on a terminal, one line per epoch otherwise."""

    def __init__(self, cfg: TrainConfig, run_dir: str, global_step: int) -> None:
        self.tty = sys.stderr.isatty()
        self.writer = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(run_dir, purge_step=global_step or None)
        self.bar = None

    def start_epoch(self, desc: str, total: int, initial: int) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)

    def batches(self, step: int, losses: list[float], accs: list[float], images_per_s: float) -> None:
        if self.writer:
            for i, (loss, acc) in enumerate(zip(losses, accs)):
                self.writer.add_scalar("batch/loss", loss, step - len(losses) + i + 1)
                self.writer.add_scalar("batch/accuracy", acc, step - len(losses) + i + 1)
        if self.bar:
            self.bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{100 * accs[-1]:.1f}%", img_s=f"{images_per_s:.0f}")
            self.bar.update(len(losses))

    def end_epoch(self, epoch: int, model: nn.Module, scalars: dict[str, float], line: str) -> None:
        if self.bar:
            self.bar.close()
            self.bar = None
        print(line, flush=True)
        if self.writer:
            for name, value in scalars.items():
                self.writer.add_scalar(f"epoch/{name}", value, epoch)
            for name, p in model.named_parameters():
                self.writer.add_histogram(f"params/{name}", p.detach().float().cpu(), epoch)
                if p.grad is not None:
                    self.writer.add_histogram(f"grads/{name}", p.grad.detach().float().cpu(), epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.writer:
            self.writer.close()


def _resume_state(cfg: TrainConfig) -> tuple[TrainConfig, dict | None]:
    if not cfg.resume:
        return cfg, None
    path = last_path(cfg.checkpoint)
    ckpt = load_checkpoint(path)
    saved = {f.name: ckpt["config"][f.name] for f in fields(TrainConfig) if f.name in ckpt["config"]}
    resumed = replace(TrainConfig(**saved), **{k: getattr(cfg, k) for k in RUNTIME_FIELDS})
    if ckpt["epoch"] >= resumed.epochs:
        raise UserError(f"{path}: that run already finished all {resumed.epochs} epochs; nothing to resume")
    print(f"resuming {path}: epoch {ckpt['epoch'] + 1}, batch {ckpt['step_in_epoch']} (saved configuration kept)")
    return resumed, ckpt


def train(cfg: TrainConfig, stop: StopFlag | None = None) -> TrainResult:
    """Train per cfg. If stop becomes set, save the exact state to the last checkpoint and return early."""
    wall_start = time.perf_counter()
    cfg, ckpt = _resume_state(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    data_start = time.perf_counter()
    data = load_cifar10(cfg.data_dir, download=cfg.download)
    (train_x, train_y), (val_x, val_y) = split_train_val(data.train_images, data.train_labels, cfg.val_size)
    if cfg.limit_train:
        train_x, train_y = train_x[:cfg.limit_train], train_y[:cfg.limit_train]
    train_loader = DeviceLoader(train_x, train_y, cfg.batch_size, device, train=True, augment=cfg.augment,
                                seed=cfg.seed, channels_last=cfg.channels_last, crop_padding=cfg.crop_padding)
    val_loader = DeviceLoader(val_x, val_y, EVAL_BATCH_SIZE, device, channels_last=cfg.channels_last) if len(val_x) else None
    data_seconds = time.perf_counter() - data_start

    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = AlexNetCifar(len(CLASSES)).to(device, memory_format=memory_format)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = cfg.bn_momentum
    if cfg.whiten_init:
        whiten_first_conv(model, normalize(train_loader.images[:5000], channels_last=False))
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias), lr=cfg.lr,
                                momentum=cfg.momentum, nesterov=cfg.nesterov)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, cfg.epochs, cfg.schedule, cfg.warmup_epochs))
    ema = EMA(model, cfg.ema) if cfg.ema else None
    kept = ema.model if ema else model  # the weights that are validated, saved for inference and exported
    precision = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    start_epoch, start_batch, best_acc, best_epoch = 0, 0, -1.0, 0
    sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
    history: list[dict] = []
    run_dir = str(Path(cfg.log_dir) / time.strftime("run_%Y%m%d-%H%M%S"))
    if ckpt is not None:
        model.load_state_dict(ckpt["train_state_dict"] if ema else ckpt["model_state_dict"])
        if ema:
            ema.model.load_state_dict(ckpt["model_state_dict"])
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        scaler.load_state_dict(ckpt["scaler_state_dict"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if device.type == "cuda" and ckpt["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        start_epoch, start_batch = ckpt["epoch"], ckpt["step_in_epoch"]
        best_acc, best_epoch = ckpt["best"]["val_accuracy"], ckpt["best"]["epoch"]
        sums, history, run_dir = dict(ckpt["epoch_sums"]), list(ckpt["history"]), ckpt["run_dir"]

    def state(epoch: int, step_in_epoch: int, metrics: dict) -> dict:
        return {"format": FORMAT, "arch": "AlexNetCifar", "num_classes": len(CLASSES), "classes": list(CLASSES),
                "preprocessing": preprocessing(),
                "model_state_dict": kept.state_dict(), "train_state_dict": model.state_dict() if ema else None,
                "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict(), "scaler_state_dict": scaler.state_dict(),
                "rng": {"cpu": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
                "epoch": epoch, "step_in_epoch": step_in_epoch, "epoch_sums": dict(sums), "metrics": metrics,
                "best": {"val_accuracy": best_acc, "epoch": best_epoch}, "history": history, "run_dir": run_dir,
                "config": asdict(cfg), "torch_version": str(torch.__version__)}

    net = torch.compile(model) if cfg.compile else model
    model.train()
    log = _Logger(cfg, run_dir, start_epoch * steps_per_epoch + start_batch)
    interrupted = False
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            log.start_epoch(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch, start_batch)
            window: list[tuple[torch.Tensor, torch.Tensor]] = []
            synchronize(device)
            tick = time.perf_counter()
            for i, (x, y) in enumerate(train_loader.epoch(epoch, start_batch), start=start_batch):
                loss, correct = train_step(net, optimizer, scaler, criterion, x, y, precision, cfg.clip_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                if ema:
                    ema.update()
                window.append((loss, correct))
                last = i + 1 == steps_per_epoch
                if len(window) == cfg.log_every or last or (stop is not None and stop.is_set()):
                    losses, corrects = torch.stack([torch.stack(w).float() for w in window]).T.tolist()
                    now = time.perf_counter()
                    sums["seconds"] += now - tick
                    tick = now
                    sums["loss"] += sum(losses) * cfg.batch_size
                    sums["correct"] += sum(corrects)
                    sums["seen"] += len(losses) * cfg.batch_size
                    if not all(map(math.isfinite, losses)):
                        raise UserError(f"loss became non-finite at epoch {epoch + 1}, batch {i + 1}: training "
                                        f"diverged (try a lower --lr); the best checkpoint {cfg.checkpoint} is intact")
                    log.batches(epoch * steps_per_epoch + i + 1, losses, [c / cfg.batch_size for c in corrects],
                                sums["seen"] / max(sums["seconds"], 1e-9))
                    window.clear()
                if stop is not None and stop.is_set() and not last:
                    save_atomic(state(epoch, i + 1, {}), last_path(cfg.checkpoint))
                    interrupted = True
                    break
            if interrupted:
                break
            start_batch = 0
            epoch_metrics = {"epoch": epoch + 1, "train_loss": sums["loss"] / sums["seen"],
                             "train_accuracy": sums["correct"] / sums["seen"], "lr": lr,
                             "images_per_second": sums["seen"] / sums["seconds"], "train_seconds": sums["seconds"]}
            val: EvalMetrics | None = None
            if val_loader is not None:
                val = evaluate_model(kept, val_loader, precision, cfg.label_smoothing, tta=cfg.tta)
                epoch_metrics.update(val_loss=val.loss, val_accuracy=val.accuracy, val_seconds=val.seconds)
            history.append(epoch_metrics)
            improved = val is None or val.accuracy > best_acc
            if improved:
                best_acc, best_epoch = (val.accuracy if val else -1.0), epoch + 1
            sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
            snapshot = state(epoch + 1, 0, epoch_metrics)
            save_atomic(snapshot, last_path(cfg.checkpoint))
            if improved:
                save_atomic(snapshot, cfg.checkpoint)
            line = (f"epoch {epoch + 1}/{cfg.epochs}  train loss {epoch_metrics['train_loss']:.4f} "
                    f"acc {100 * epoch_metrics['train_accuracy']:.2f}%")
            if val is not None:
                line += f"  val loss {val.loss:.4f} acc {100 * val.accuracy:.2f}%"
            line += f"  lr {epoch_metrics['lr']:.4g}  {epoch_metrics['images_per_second']:.0f} img/s"
            log.end_epoch(epoch + 1, model, {k: v for k, v in epoch_metrics.items() if k != "epoch"}, line)
    finally:
        log.close()

    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_seconds"] * h["images_per_second"] for h in history)
    return TrainResult(best_val_accuracy=best_acc if best_acc >= 0 else None, best_epoch=best_epoch,
                       epochs_done=len(history), wall_seconds=time.perf_counter() - wall_start,
                       data_seconds=data_seconds, train_seconds=train_seconds,
                       eval_seconds=sum(h.get("val_seconds", 0.0) for h in history),
                       images_per_second=images / train_seconds if train_seconds else 0.0,
                       interrupted=interrupted, checkpoint=cfg.checkpoint, history=history)


def recipe_config(name: str, **overrides) -> TrainConfig:
    """TrainConfig for a named recipe, with explicit overrides on top."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose from {', '.join(sorted(RECIPES))}")
    return TrainConfig(**{**RECIPES[name], **overrides, "recipe": name})


def main(cfg: TrainConfig) -> int:
    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nCtrl-C: saving the last checkpoint after this step (press again to abort without saving)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = train(cfg, stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.interrupted:
        print(f"interrupted: state saved to {last_path(result.checkpoint)}; continue with the same command plus "
              f"--resume", file=sys.stderr)
        return 130
    best = (f"best val accuracy {100 * result.best_val_accuracy:.2f}% at epoch {result.best_epoch}"
            if result.best_val_accuracy is not None else f"no validation split; kept epoch {result.best_epoch}")
    print(f"done: {best}; wall time {result.wall_seconds:.1f} s; {result.images_per_second:.0f} images/s mean; "
          f"checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(TrainConfig, main, "python -m alexnet_perf.train",
                             "Train the seed's AlexNet-style CNN on CIFAR-10. Defaults reproduce the seed's recipe; "
                             "--recipe fast|best switch to the tuned ones.", presets=("recipe", RECIPES)))
