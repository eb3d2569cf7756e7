"""Training: `python -m alexnet_perf.train` (the `fast` recipe by default) and the importable train(config).

One loop for every configuration: eager or torch.compile, fp32 or bf16/fp16 autocast, channels-last or not.
`build_training` makes everything a run updates (one `Training` object); checkpoint.py turns it into a checkpoint
and back. Checkpoints are written atomically each epoch (best on validation accuracy, and the last one for
--resume), never with non-finite weights; Ctrl-C or SIGTERM saves the exact mid-epoch state, and --resume continues
as if the run had never stopped. An existing run is never replaced unless --overwrite says so, and a run holds its
checkpoint for its whole duration, so that two runs started together on one checkpoint cannot both proceed.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from . import cli
from .atomic import check_writable, check_writable_dir, claim_output
from .checkpoint import (DEFAULT_CHECKPOINT, last_path, load_checkpoint, restore_training, save_atomic,
                         training_checkpoint)
from .compilation import compile_network
from .data import CLASSES, DATA_DIR_HELP, DeviceLoader, load_cifar10, normalize, split_train_val
from .errors import Terminated, UserError
from .ema import EMA
from .evaluate import EVAL_BATCH_SIZE, EvalMetrics, evaluate_model, format_snapshot, score_checkpoint
from .init import whiten_first_conv
from .model import AlexNetCifar
from .recipes import DEFAULT_RECIPE, RECIPES
from .runtime import (amp_dtype, autocast, keep_freed_memory, resolve_device, seed_everything, set_tf32,
                      synchronize)

SCHEDULES = ("cosine-epoch", "cosine", "linear")
PROG = "python -m alexnet_perf.train"
LONG_RUN_SECONDS = 600  # a CPU run of the original recipe estimated longer than this gets a pointer to --recipe fast


@dataclass
class TrainSettings:
    """Every training option with the original run's values as defaults. Build configurations with TrainConfig,
    which applies a named recipe first."""

    recipe: str = cli.option(DEFAULT_RECIPE, "named recipe whose settings become the defaults (flags still "
                                             "override): fast = quickest to the original's 83.18% test accuracy "
                                             "(about 2 minutes on a 2-core CPU), best = highest accuracy (50 "
                                             "epochs), original = the original 500-epoch run",
                             choices=sorted(RECIPES), preset=True)
    epochs: int = cli.option(500, "number of epochs", at_least=1)
    batch_size: int = cli.option(128, "training batch size (the last partial batch of an epoch is dropped)",
                                 at_least=1)
    lr: float = cli.option(0.075, "peak SGD learning rate", above=0)
    momentum: float = cli.option(0.9, "SGD momentum", at_least=0, below=1)
    nesterov: bool = cli.option(False, "Nesterov momentum")
    schedule: str = cli.option("cosine-epoch", "learning-rate schedule: cosine-epoch (the seed's CosineAnnealingLR, "
                                               "stepped per epoch), cosine or linear (per step, to 0)",
                               choices=SCHEDULES)
    warmup_epochs: float = cli.option(0.0, "linear warm-up from 0 over this many epochs (per-step schedules)",
                                      at_least=0)
    weight_decay: float = cli.option(2e-3, "SGD weight decay (L2)", at_least=0)
    decay_norm_and_bias: bool = cli.option(True, "apply weight decay to BatchNorm weights and biases too (the seed)")
    bn_momentum: float = cli.option(0.1, "BatchNorm running-statistics momentum", above=0, at_most=1)
    whiten_init: bool = cli.option(False, "initialise the first convolution as a patch-whitening filter bank "
                                          "computed from 5,000 training images (airbench's trick)")
    bn_bias_lr_scale: float = cli.option(1.0, "learning-rate multiplier of the BatchNorm biases", above=0)
    ema: float = cli.option(0.0, "keep an exponential moving average of the weights with this per-step decay and "
                                 "validate/save it (0: off)", at_least=0, below=1)
    dropout_scale: float = cli.option(1.0, "multiply the network's dropout rates by this while training (0: no "
                                           "dropout; inference never drops)", at_least=0, at_most=1)
    label_smoothing: float = cli.option(0.1, "label smoothing of the cross-entropy loss", at_least=0, below=1)
    clip_grad_norm: float = cli.option(1.0, "clip the gradient's global L2 norm to this (0: no clipping)",
                                       at_least=0)
    augment: bool = cli.option(False, "random crop (zero padding) + horizontal flip, batched on the device")
    crop_padding: int = cli.option(4, "padding of the random crop with --augment, in pixels", at_least=0,
                                   at_most=16)
    low_res_epochs: int = cli.option(0, "train the first N epochs on random --low-res-size crops (cheaper per "
                                        "image; validation and test stay 32x32)", at_least=0)
    low_res_size: int = cli.option(24, "input size of the first --low-res-epochs epochs, in pixels", at_least=8,
                                   at_most=32)
    tta: bool = cli.option(False, "score this recipe with flip test-time augmentation (mean logits of image and "
                                  "mirror image): validation uses it, and the closing test report and evaluate "
                                  "show it beside the plain figure (recorded in the checkpoint)")
    val_size: int = cli.option(10_000, "last N training images held out for validation (0: train on all 50,000)",
                               at_least=0)
    limit_train: int = cli.option(0, "train on only the first N training images, for quick runs (0: all)",
                                  at_least=0)
    device: str = cli.option("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    compile: bool = cli.option(False, "torch.compile the network (forward and backward) for training")
    amp: bool = cli.option(False, "mixed precision: bf16 autocast on CPU/modern GPUs, fp16 + GradScaler otherwise")
    tf32: bool = cli.option(False, "on GPUs, let the fp32 convolutions and matmuls (all of them without --amp) run "
                                   "in TF32: faster, with a 10-bit mantissa; off, fp32 means fp32")
    channels_last: bool = cli.option(True, "channels-last memory layout for the network and its inputs")
    reuse_freed_memory: bool = cli.option(True, "on a CPU, keep freed memory in the process for the next step "
                                                "instead of returning it to the kernel (glibc): large tensors stop "
                                                "faulting in fresh pages every step; the process keeps its peak "
                                                "memory until it exits")
    seed: int = cli.option(0, "seed for initialisation, shuffling, augmentation and dropout", at_least=0)
    deterministic: bool = cli.option(False, "use deterministic algorithms only (slower on GPU)")
    data_dir: str | None = cli.option(None, DATA_DIR_HELP)
    download: bool = cli.option(False, "download CIFAR-10 if it is missing")
    checkpoint: str = cli.option(DEFAULT_CHECKPOINT, "best-validation checkpoint path; the last-epoch one is "
                                                     "written beside it (*.last.pth)")
    resume: bool = cli.option(False, "continue the run saved in the last checkpoint (its configuration is kept)")
    overwrite: bool = cli.option(False, "start a new run even though --checkpoint (or its .last.pth) exists, "
                                        "replacing that earlier run's checkpoints")
    tensorboard: bool = cli.option(True, "log to TensorBoard under --log-dir")
    log_dir: str = cli.option(".cache/tensorboard/training/alexnet", "TensorBoard folder; each run gets run_<time>")
    log_every: int = cli.option(20, "update the progress bar and batch-wise TensorBoard scalars every N steps",
                                at_least=1)


class TrainConfig(TrainSettings):
    """TrainConfig(recipe=NAME, **overrides): the recipe's settings over the seed's, then the overrides; checked
    against every option's range. The CLI builds it the same way from the flags given."""

    def __init__(self, recipe: str = DEFAULT_RECIPE, **overrides: Any) -> None:
        if recipe not in RECIPES:
            raise UserError(f"unknown recipe {recipe!r}; choose from {', '.join(sorted(RECIPES))}")
        super().__init__(recipe=recipe, **{**RECIPES[recipe], **overrides})
        cli.validate(self)


# Settings that change how a run executes but not what it computes: --resume may change them.
RUNTIME_FIELDS = ("device", "compile", "data_dir", "download", "checkpoint", "resume", "overwrite", "tensorboard",
                  "log_dir", "log_every")


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


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
        return min(1.0, (step + 1) / warmup)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 1 - progress if schedule == "linear" else (1 + math.cos(math.pi * progress)) / 2


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool, lr: float = 0.0,
                     bn_bias_lr_scale: float = 1.0) -> list[dict]:
    """One group, or two when BatchNorm weights and all biases (the 1-d tensors) are exempt from weight decay; with
    bn_bias_lr_scale != 1 the BatchNorm biases get a group of their own at lr * bn_bias_lr_scale."""
    fast = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)} if bn_bias_lr_scale != 1 else set()
    params = [p for p in model.parameters() if id(p) not in fast]
    groups = ([{"params": params, "weight_decay": weight_decay}] if decay_norm_and_bias else
              [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
               {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}])
    if fast:
        groups.append({"params": [p for p in model.parameters() if id(p) in fast], "lr": lr * bn_bias_lr_scale,
                       "weight_decay": weight_decay if decay_norm_and_bias else 0.0})
    return groups


def set_training_regularisation(model: nn.Module, bn_momentum: float, dropout_scale: float) -> None:
    """Set every BatchNorm's running-statistics momentum and scale every dropout rate (training-time only: the
    layers and weights are unchanged, and evaluation mode never drops)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = bn_momentum
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            m.p *= dropout_scale


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so that --resume continues exactly."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches done in the current epoch (non-zero only in a Ctrl-C save)
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    sums: dict[str, float] = field(default_factory=_zero_sums)  # running totals of the current epoch
    history: list[dict] = field(default_factory=list)  # one dict of metrics per completed epoch
    run_dir: str = ""  # TensorBoard folder of the run


@dataclass
class Training:
    """Everything a run reads and updates, built by build_training; checkpoint.py saves and restores it."""

    cfg: TrainConfig
    device: torch.device
    precision: torch.dtype | None
    model: nn.Module
    ema: EMA | None
    net: nn.Module  # model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    train_loader: DeviceLoader
    val_loader: DeviceLoader | None
    progress: Progress

    @property
    def kept(self) -> nn.Module:
        """The weights that are validated, saved for inference and exported: the EMA's when there is one."""
        return self.ema.model if self.ema else self.model

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on (x, y): forward under autocast, loss, backward, clipping, update, schedule, EMA.
        Returns the loss and the number of correct predictions, still on the device."""
        self.optimizer.zero_grad(set_to_none=True)  # before the forward: the last step's gradients are freed
        # before this step's activations are allocated (and, with CUDA graphs, before the graph is replayed)
        with autocast(x.device, self.precision):
            logits = self.net(x)
        loss = self.criterion(logits.float(), y)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update()
        return loss.detach(), (logits.argmax(1) == y).sum()


Split = tuple[np.ndarray, np.ndarray]


def load_splits(cfg: TrainConfig) -> tuple[Split, Split | None]:
    """The training images (all, or the first --limit-train) and the validation split (None when --val-size 0)."""
    data = load_cifar10(cfg.data_dir, download=cfg.download)
    (train_x, train_y), (val_x, val_y) = split_train_val(data.train_images, data.train_labels, cfg.val_size)
    if cfg.limit_train:
        train_x, train_y = train_x[:cfg.limit_train], train_y[:cfg.limit_train]
    return (train_x, train_y), ((val_x, val_y) if len(val_x) else None)


def build_training(cfg: TrainConfig, train_data: Split, val_data: Split | None = None) -> Training:
    """Seed and set TF32 as cfg says (process-wide, like cuDNN's autotuning), then make the loaders, network (with
    BatchNorm momentum, dropout scale and whitening init), EMA, optimizer, schedule, scaler and loss of cfg: a fresh
    run at step 0, or the frame that restore_training fills.
    On a CPU the process first keeps freed memory for reuse (cfg.reuse_freed_memory; runtime.keep_freed_memory)."""
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.reuse_freed_memory:
        keep_freed_memory()
    seed_everything(cfg.seed, cfg.deterministic)
    set_tf32(cfg.tf32)
    train_loader = DeviceLoader(*train_data, cfg.batch_size, device, train=True, augment=cfg.augment, seed=cfg.seed,
                                channels_last=cfg.channels_last, crop_padding=cfg.crop_padding,
                                low_res_epochs=cfg.low_res_epochs, low_res_size=cfg.low_res_size)
    val_loader = (DeviceLoader(*val_data, EVAL_BATCH_SIZE, device, channels_last=cfg.channels_last)
                  if val_data is not None else None)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = AlexNetCifar(len(CLASSES)).to(device, memory_format=memory_format).train()
    set_training_regularisation(model, cfg.bn_momentum, cfg.dropout_scale)
    if cfg.whiten_init:
        whiten_first_conv(model, normalize(train_loader.images[:5000], channels_last=False))
    groups = parameter_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, cfg.lr, cfg.bn_bias_lr_scale)
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    steps = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, cfg.epochs, cfg.schedule, cfg.warmup_epochs))
    precision = amp_dtype(device, cfg.amp)
    return Training(cfg=cfg, device=device, precision=precision, model=model,
                    ema=EMA(model, cfg.ema) if cfg.ema else None,
                    net=compile_network(model, device) if cfg.compile else model, optimizer=optimizer,
                    scheduler=scheduler,
                    scaler=torch.amp.GradScaler(device.type, enabled=precision == torch.float16),
                    criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
                    train_loader=train_loader, val_loader=val_loader,
                    progress=Progress(run_dir=str(Path(cfg.log_dir) / time.strftime("run_%Y%m%d-%H%M%S"))))


def given_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings of cfg that differ from what its recipe gives (and the recipe, unless it is the default one):
    what the user chose, as opposed to defaults. Runtime settings are left out."""
    defaults = TrainConfig(cfg.recipe)
    chosen = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)
              if f.name not in RUNTIME_FIELDS and getattr(cfg, f.name) != getattr(defaults, f.name)}
    if cfg.recipe != TrainSettings.recipe:
        chosen["recipe"] = cfg.recipe
    return chosen


def prepare_run(cfg: TrainConfig) -> tuple[TrainConfig, dict | None]:
    """Check, before any work, that the run may start: the outputs are writable, and either --resume finds a run to
    continue (whose saved configuration it returns with the checkpoint) or no earlier run would be replaced
    without --overwrite."""
    check_writable(cfg.checkpoint, "--checkpoint")
    if cfg.tensorboard:
        check_writable_dir(cfg.log_dir, "--log-dir")
    last = last_path(cfg.checkpoint)
    if not cfg.resume:
        existing = [str(p) for p in (Path(cfg.checkpoint), last) if p.exists()]
        if existing and not cfg.overwrite:
            raise UserError(f"{' and '.join(existing)} already exist(s) from an earlier run: continue it with "
                            f"--resume, replace it with --overwrite, or write elsewhere with --checkpoint PATH")
        return cfg, None
    ckpt = load_checkpoint(last)
    saved = {f.name: ckpt["config"][f.name] for f in fields(TrainConfig) if f.name in ckpt["config"]}
    conflicting = [name for name, value in given_settings(cfg).items() if name in saved and saved[name] != value]
    if conflicting:
        name = conflicting[0]
        raise UserError(f"--resume continues {last} with its saved configuration, but {cli.flag(name)} "
                        f"{getattr(cfg, name)} differs from its {saved[name]}: drop the flag, or start a new run with "
                        f"--overwrite or another --checkpoint")
    resumed = replace(TrainConfig(**saved), **{k: getattr(cfg, k) for k in RUNTIME_FIELDS})
    if ckpt["epoch"] >= resumed.epochs:
        raise UserError(f"{last}: that run already finished all {resumed.epochs} epochs; nothing to resume")
    print(f"resuming {last}: epoch {ckpt['epoch'] + 1}, batch {ckpt['step_in_epoch']} (saved configuration kept)")
    return resumed, ckpt


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes} min" if minutes < 90 else \
        f"{minutes // 60} h {minutes % 60:02d} min"


class _Logger:
    """TensorBoard (optional) plus progress output: one live bar over the whole run on a terminal, a line per
    epoch always, and after this invocation's first epoch an estimate of when the run ends."""

    def __init__(self, t: Training) -> None:
        self.tty = sys.stderr.isatty()
        self.writer = None
        self.bar = None
        self.estimated = False
        done = t.progress.epoch * t.steps_per_epoch + t.progress.step_in_epoch
        if t.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(t.progress.run_dir, purge_step=done or None)
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=t.cfg.epochs * t.steps_per_epoch, initial=done, unit="step", dynamic_ncols=True,
                            leave=False)

    def __enter__(self) -> _Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.close()
        if self.writer:
            self.writer.close()

    def batches(self, t: Training, step: int, losses: list[float], accs: list[float]) -> None:
        if self.writer:
            for i, (loss, acc) in enumerate(zip(losses, accs)):
                self.writer.add_scalar("batch/loss", loss, step - len(losses) + i + 1)
                self.writer.add_scalar("batch/accuracy", acc, step - len(losses) + i + 1)
        if self.bar:
            sums = t.progress.sums
            self.bar.set_description(f"epoch {t.progress.epoch + 1}/{t.cfg.epochs}", refresh=False)
            self.bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{100 * accs[-1]:.1f}%",
                                 img_s=f"{sums['seen'] / max(sums['seconds'], 1e-9):.0f}")
            self.bar.update(len(losses))

    def epoch(self, t: Training, metrics: dict[str, float], line: str, epoch_seconds: float) -> None:
        (self.bar.write if self.bar else print)(line)
        sys.stdout.flush()
        if not self.estimated:
            self.estimated = True
            self._estimate(t, epoch_seconds)
        if self.writer:
            for name, value in metrics.items():
                self.writer.add_scalar(f"epoch/{name}", value, t.progress.epoch)
            for name, p in t.model.named_parameters():
                self.writer.add_histogram(f"params/{name}", p.detach().float().cpu(), t.progress.epoch)
                if p.grad is not None:
                    self.writer.add_histogram(f"grads/{name}", p.grad.detach().float().cpu(), t.progress.epoch)
            self.writer.flush()

    def _estimate(self, t: Training, epoch_seconds: float) -> None:
        remaining = (t.cfg.epochs - t.progress.epoch) * epoch_seconds
        if remaining <= 0:
            return
        finish = time.strftime("%a %H:%M", time.localtime(time.time() + remaining))
        text = (f"estimate: {t.cfg.epochs - t.progress.epoch} more epochs at {epoch_seconds:.0f} s each ≈ "
                f"{_duration(remaining)}, finishing about {finish}")
        if t.device.type == "cpu" and t.cfg.recipe == "original" and remaining > LONG_RUN_SECONDS:
            text += ("; on a CPU, `--recipe fast` reaches the seed's 83.18% test accuracy in minutes "
                     "(stop with Ctrl-C: this run is saved and --resume continues it)")
        (self.bar.write if self.bar else print)(text)


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in (*module.parameters(), *module.buffers())
               if t.is_floating_point())


def _diverged(t: Training, where: str) -> UserError:
    """The error for a run whose loss or weights became non-finite, saying truly what is still on disk."""
    kept = []
    if t.progress.best_epoch and Path(t.cfg.checkpoint).is_file():
        kept.append(f"the best checkpoint {t.cfg.checkpoint} (epoch {t.progress.best_epoch})")
    if t.progress.epoch and last_path(t.cfg.checkpoint).is_file():
        kept.append(f"the last checkpoint {last_path(t.cfg.checkpoint)} (epoch {t.progress.epoch})")
    earlier = [str(f) for f in (Path(t.cfg.checkpoint), last_path(t.cfg.checkpoint)) if f.is_file()]
    saved = ("nothing of the failed epoch was saved; " + " and ".join(kept) + " are unchanged" if kept
             else "this run wrote no checkpoint" + (f" ({' and '.join(earlier)} left as they were)" if earlier
                                                     else ""))
    return UserError(f"training diverged {where} (try a lower --lr); {saved}")


def save(t: Training, snapshot: dict[str, Any], path: str | Path) -> None:
    """save_atomic, with a refused write (full disk, quota, read-only folder) ending the run in one line that says
    which saved state --resume continues from."""
    try:
        save_atomic(snapshot, path)
    except UserError as e:
        last = last_path(t.cfg.checkpoint)
        try:
            kept = (f"the last saved state is {last} (epoch {load_checkpoint(last)['epoch']}); make room and "
                    f"continue it with --resume")
        except UserError:
            kept = "no saved state to continue from"
        raise UserError(f"{e}; {kept}") from None


def train_epoch(t: Training, log: _Logger, stop: StopFlag | None) -> bool:
    """Run the rest of the current epoch; True when stop was set (the exact state is then saved to the last
    checkpoint). Losses are read back every --log-every steps, and a non-finite one ends the run."""
    p, cfg = t.progress, t.cfg
    window: list[tuple[torch.Tensor, torch.Tensor]] = []
    synchronize(t.device)
    tick = time.perf_counter()
    for i, (x, y) in enumerate(t.train_loader.epoch(p.epoch, p.step_in_epoch), start=p.step_in_epoch):
        window.append(t.step(x, y))
        p.step_in_epoch = i + 1
        last = p.step_in_epoch == t.steps_per_epoch
        stopping = stop is not None and stop.is_set() and not last
        if len(window) == cfg.log_every or last or stopping:
            losses, corrects = torch.stack([torch.stack(w).float() for w in window]).T.tolist()
            now = time.perf_counter()
            p.sums["seconds"] += now - tick
            tick = now
            p.sums["loss"] += sum(losses) * cfg.batch_size
            p.sums["correct"] += sum(corrects)
            p.sums["seen"] += len(losses) * cfg.batch_size
            if not all(map(math.isfinite, losses)):
                raise _diverged(t, f"at epoch {p.epoch + 1}, batch {i + 1}: the loss became non-finite")
            log.batches(t, p.epoch * t.steps_per_epoch + i + 1, losses, [c / cfg.batch_size for c in corrects])
            window.clear()
        if stopping:
            if not _all_finite(t.model):
                raise _diverged(t, f"at epoch {p.epoch + 1}, batch {i + 1}: the weights became non-finite")
            save(t, training_checkpoint(t, {}), last_path(cfg.checkpoint))
            return True
    return False


def last_lr(t: Training) -> float:
    """The learning rate of the current epoch's last step (the scheduler has already moved past it)."""
    step = (t.progress.epoch + 1) * t.steps_per_epoch - 1
    return t.cfg.lr * lr_factor(step, t.steps_per_epoch, t.cfg.epochs, t.cfg.schedule, t.cfg.warmup_epochs)


def finish_epoch(t: Training, log: _Logger, epoch_start: float) -> None:
    """Validate, record the epoch, and save the last (and, if it improved, the best) checkpoint, after checking
    that the kept weights and the validation result are finite."""
    p, cfg = t.progress, t.cfg
    metrics = {"epoch": p.epoch + 1, "train_loss": p.sums["loss"] / p.sums["seen"],
               "train_accuracy": p.sums["correct"] / p.sums["seen"], "lr": last_lr(t),
               "images_per_second": p.sums["seen"] / p.sums["seconds"], "train_seconds": p.sums["seconds"]}
    if not (_all_finite(t.model) and _all_finite(t.kept)):
        raise _diverged(t, f"in epoch {p.epoch + 1}: the weights became non-finite")
    val: EvalMetrics | None = None
    if t.val_loader is not None:
        val = evaluate_model(t.kept, t.val_loader, t.precision, cfg.label_smoothing, tta=cfg.tta)
        if not math.isfinite(val.loss):
            raise _diverged(t, f"in epoch {p.epoch + 1}: the validation loss is non-finite")
        metrics.update(val_loss=val.loss, val_accuracy=val.accuracy, val_seconds=val.seconds)
    improved = val is None or val.accuracy > p.best_val_accuracy
    p.epoch, p.step_in_epoch = p.epoch + 1, 0
    p.history.append(metrics)
    p.sums = _zero_sums()
    if improved:
        p.best_val_accuracy, p.best_epoch = (val.accuracy if val else -1.0), p.epoch
    snapshot = training_checkpoint(t, metrics)
    save(t, snapshot, last_path(cfg.checkpoint))
    if improved:
        save(t, snapshot, cfg.checkpoint)
    line = (f"epoch {p.epoch}/{cfg.epochs}  train loss {metrics['train_loss']:.4f} "
            f"acc {100 * metrics['train_accuracy']:.2f}%")
    if val is not None:
        line += f"  val loss {val.loss:.4f} acc {100 * val.accuracy:.2f}%"
    line += f"  lr {metrics['lr']:.4g}  {metrics['images_per_second']:.0f} img/s"
    log.epoch(t, {k: v for k, v in metrics.items() if k != "epoch"}, line, time.perf_counter() - epoch_start)


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


def train(cfg: TrainConfig, stop: StopFlag | None = None) -> TrainResult:
    """Train per cfg, holding the claim on its checkpoint (a second run on it is refused, not raced). If stop becomes
    set, save the exact state to the last checkpoint and return early."""
    check_writable(cfg.checkpoint, "--checkpoint")
    with claim_output(cfg.checkpoint, "--checkpoint"):
        return _train(cfg, stop)


def _train(cfg: TrainConfig, stop: StopFlag | None) -> TrainResult:
    wall_start = time.perf_counter()
    cfg, ckpt = prepare_run(cfg)
    data_start = time.perf_counter()
    splits = load_splits(cfg)
    data_seconds = time.perf_counter() - data_start
    t = build_training(cfg, *splits)
    if ckpt is not None:
        restore_training(t, ckpt)
    interrupted = False
    with _Logger(t) as log:
        while t.progress.epoch < cfg.epochs and not interrupted:
            epoch_start = time.perf_counter()
            interrupted = train_epoch(t, log, stop)
            if not interrupted:
                finish_epoch(t, log, epoch_start)
    history = t.progress.history
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_seconds"] * h["images_per_second"] for h in history)
    best = t.progress.best_val_accuracy
    return TrainResult(best_val_accuracy=best if best >= 0 else None, best_epoch=t.progress.best_epoch,
                       epochs_done=len(history), wall_seconds=time.perf_counter() - wall_start,
                       data_seconds=data_seconds, train_seconds=train_seconds,
                       eval_seconds=sum(h.get("val_seconds", 0.0) for h in history),
                       images_per_second=images / train_seconds if train_seconds else 0.0,
                       interrupted=interrupted, checkpoint=cfg.checkpoint, history=history)


class CtrlC:
    """SIGINT and SIGTERM handler and stop flag: the first signal asks the loop to save after the current step, a
    second one aborts at once without saving (KeyboardInterrupt, exit status 130, or Terminated, 143). SIGTERM is
    how schedulers and container runtimes stop a job, so it saves the run exactly as Ctrl-C does."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def is_set(self) -> bool:
        return self.event.is_set()

    def __call__(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.signum = signum
        self.event.set()
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        print(f"\n{name}: saving the last checkpoint after this step (signal again to abort without saving)",
              file=sys.stderr, flush=True)

    @property
    def exit_status(self) -> int:
        """128 + the signal that stopped the run: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


def main(cfg: TrainConfig) -> int:
    """Train with the SIGINT/SIGTERM handler installed; 130 or 143 when stopped by one (state saved), 0 when done."""
    stop = CtrlC()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = train(cfg, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result.interrupted:
        print(f"interrupted: state saved to {last_path(result.checkpoint)}; continue with the same command plus "
              f"--resume", file=sys.stderr)
        return stop.exit_status
    best = (f"kept epoch {result.best_epoch} (best val accuracy {100 * result.best_val_accuracy:.2f}%)"
            if result.best_val_accuracy is not None else f"kept the last epoch ({result.best_epoch}; no validation "
                                                         f"split)")
    print(f"done: {best}; training wall time {result.wall_seconds:.1f} s; {result.images_per_second:.0f} images/s "
          f"mean; checkpoint {result.checkpoint}")
    print(format_snapshot(score_checkpoint(result.checkpoint, cfg.data_dir, resolve_device(cfg.device),
                                           channels_last=cfg.channels_last)), flush=True)
    return 0


DESCRIPTION = (
    "Train the seed's AlexNet-style CNN on CIFAR-10 and print the kept checkpoint's test accuracy (plain, and with "
    "flip TTA where the recipe is scored so) and per-class recall, as `python -m alexnet_perf.evaluate` does. The "
    "default recipe, fast, reaches the original run's 83.18% with flip TTA in about 2 minutes on a 2-core CPU; "
    "--recipe best|original switch to the others, and any flag overrides the recipe. The best-validation "
    "checkpoint goes to --checkpoint, the last epoch's beside it; an existing one is never replaced unless "
    "--overwrite is given, and a second run on the same checkpoint is refused while the first holds it. Ctrl-C or "
    "SIGTERM saves the run (exit status 130 or 143) and --resume continues it exactly.")

if __name__ == "__main__":
    raise SystemExit(cli.run(TrainConfig, main, PROG, DESCRIPTION))
