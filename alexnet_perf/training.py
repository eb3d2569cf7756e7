"""The state of a training run: the network, EMA or lookahead, optimizer, learning-rate schedule, scaler, loss,
loaders and progress of one configuration, built by `build_training` (a fresh run at step 0, or the frame
Training.restore fills from a checkpoint), the step that updates it, and its checkpoint."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import FORMAT
from .compilation import compile_network
from .data import CLASSES, load_cifar10, preprocessing, split_train_val
from .device import amp_precision, autocast, keep_freed_memory, resolve_device, seed_everything, set_tf32
from .ema import EMA, Lookahead
from .errors import UserError
from .evaluate import EVAL_BATCH_SIZE
from .initialisation import dirac_later_convs, whiten_first_conv
from .loader import DeviceLoader, normalize
from .model import AlexNetCifar
from .train_config import TrainConfig


def lr_factor(step: int, steps_per_epoch: float, epochs: int, schedule: str = "cosine-epoch",
              warmup_epochs: float = 0.0) -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based).

    cosine-epoch: the seed's CosineAnnealingLR(T_max=epochs, eta_min=0), stepped once per epoch (no warm-up).
    cosine / linear: per step from the end of the linear warm-up down to 0 at the last step.
    steps_per_epoch may be a mean (a fraction), for runs whose epochs differ in length.
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


def first_block_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The first convolution's and its BatchNorm's weights and biases: what --freeze-first-block-from freezes."""
    conv, norm = model.features[0], model.features[1]
    return [conv.weight, conv.bias, norm.weight, norm.bias]


def set_training_regularisation(model: nn.Module, bn_momentum: float, dropout_scale: float) -> None:
    """Set every BatchNorm's running-statistics momentum and scale every dropout rate (training-time only: the
    layers and weights are unchanged, and evaluation mode never drops)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = bn_momentum
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            m.p *= dropout_scale


def zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so that --resume continues exactly."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches done in the current epoch (non-zero only in a Ctrl-C save)
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    sums: dict[str, float] = field(default_factory=zero_sums)  # running totals of the current epoch
    history: list[dict] = field(default_factory=list)  # one dict of metrics per completed epoch
    run_dir: str = ""  # TensorBoard folder of the run


def schedule_factor(cfg: TrainConfig, loader: DeviceLoader) -> Callable[[int], float]:
    """lr_factor of each step of the run of cfg over loader's epochs, whose lengths may differ (hard_fraction): a
    per-step schedule runs over the run's steps, its warm-up over warmup_epochs of the first epoch's."""
    mean = loader.steps_before(cfg.epochs) / cfg.epochs
    warmup = cfg.warmup_epochs * loader.batches(0) / mean
    return lambda step: lr_factor(step, mean, cfg.epochs, cfg.schedule, warmup)


class Objective(nn.Module):
    """What a training step differentiates: the network's logits under autocast, the loss (in fp32), the count
    of correct predictions, and each image's loss (criterion is unreduced; the step's loss is their mean). One
    module, so that --compile puts the loss in the network's graph: run eagerly around a compiled network, its few
    small operators cost 2–3 % of a CPU step."""

    def __init__(self, model: nn.Module, criterion: nn.Module, precision: str) -> None:
        super().__init__()
        self.model, self.criterion, self.precision = model, criterion, precision
        self.first_block_frozen = False

    def freeze_first_block(self, frozen: bool) -> None:
        """Give the first convolution and BatchNorm no gradient (frozen) or gradients again. forward branches on the
        flag so that torch.compile guards on it and traces a step without their backward: torch 2.11 does not guard
        parameters' requires_grad, and its compiled step went on computing the frozen block's gradients."""
        for parameter in first_block_parameters(self.model):
            parameter.requires_grad_(not frozen)
        self.first_block_frozen = frozen

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.first_block_frozen:  # nothing to do here: the branch is what a compiled step is specialised on
            pass
        with autocast(x.device, self.precision):
            logits = self.model(x)
        losses = self.criterion(logits.float(), y)
        return losses.mean(), (logits.argmax(1) == y).sum(), losses.detach()


@dataclass
class Training:
    """Everything a run reads and updates, built by build_training; checkpoint.py saves and restores it."""

    cfg: TrainConfig
    device: torch.device
    precision: str  # fp32, or what mixed precision runs in (bf16, fp16)
    model: nn.Module
    ema: EMA | None
    lookahead: Lookahead | None
    objective: Objective  # model and loss
    net: nn.Module  # objective, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: DeviceLoader
    val_loader: DeviceLoader | None
    progress: Progress

    @property
    def evaluated_model(self) -> nn.Module:
        """The network that is validated, saved for inference and exported: the EMA copy when there is one, else
        the trained network itself."""
        return self.ema.model if self.ema else self.model

    def checkpoint(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint of this state: what inference needs (plain-keyed weights of the evaluated model, classes,
        preprocessing), and everything --resume needs to continue exactly (optimizer, schedule, scaler, RNG,
        progress)."""
        p = self.progress
        return {"format": FORMAT, "arch": "AlexNetCifar", "num_classes": len(CLASSES), "classes": list(CLASSES),
                "preprocessing": preprocessing(),
                "model_state_dict": self.evaluated_model.state_dict(),
                "train_state_dict": self.model.state_dict() if self.ema else None,
                "lookahead_state": self.lookahead.state_dict() if self.lookahead else None,
                "image_losses": ({"losses": self.train_loader.losses, "ranking": self.train_loader.ranking}
                                 if self.cfg.hard_fraction < 1 else None),
                "optimizer_state_dict": self.optimizer.state_dict(),
                "scheduler_state_dict": self.scheduler.state_dict(), "scaler_state_dict": self.scaler.state_dict(),
                "rng": {"cpu": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
                "epoch": p.epoch, "step_in_epoch": p.step_in_epoch, "epoch_sums": dict(p.sums), "metrics": metrics,
                "best": {"val_accuracy": p.best_val_accuracy, "epoch": p.best_epoch}, "history": list(p.history),
                "run_dir": p.run_dir, "config": asdict(self.cfg), "torch_version": str(torch.__version__)}


    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a checkpoint of this configuration into this freshly built state."""
        if (ckpt.get("train_state_dict") is None) != (self.ema is None):
            raise UserError("checkpoint and configuration disagree on whether an EMA of the weights is kept")
        if (ckpt.get("lookahead_state") is None) != (self.lookahead is None):
            raise UserError("checkpoint and configuration disagree on whether lookahead is on")
        self.model.load_state_dict(ckpt["train_state_dict"] if self.ema else ckpt["model_state_dict"])
        if self.lookahead:
            self.lookahead.load_state_dict(ckpt["lookahead_state"])
        if self.cfg.hard_fraction < 1:
            self.train_loader.losses.copy_(ckpt["image_losses"]["losses"])
            self.train_loader.ranking.copy_(ckpt["image_losses"]["ranking"])
        if self.ema:
            self.ema.model.load_state_dict(ckpt["model_state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        self.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        self.scaler.load_state_dict(ckpt["scaler_state_dict"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if self.device.type == "cuda" and ckpt["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        p = self.progress
        p.epoch, p.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        p.best_val_accuracy, p.best_epoch = ckpt["best"]["val_accuracy"], ckpt["best"]["epoch"]
        p.sums, p.history, p.run_dir = dict(ckpt["epoch_sums"]), list(ckpt["history"]), ckpt["run_dir"]

    def start_epoch(self) -> None:
        """Settings that follow the epoch about to run: from cfg.freeze_first_block_from on, the first block's
        parameters get no gradient, so the optimizer leaves them (momentum and weight decay stop; its BatchNorm
        still normalises with the batch's statistics and updates its running ones). A resumed run sets them again
        from its epoch."""
        start = self.cfg.freeze_first_block_from
        self.objective.freeze_first_block(bool(start and self.progress.epoch + 1 >= start))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step on (x, y): forward under autocast, loss, backward, clipping, update, schedule,
        lookahead, EMA.
        Returns the loss, the number of correct predictions and each image's loss, still on the device."""
        self.optimizer.zero_grad(set_to_none=True)  # before the forward: the last step's gradients are freed
        # before this step's activations are allocated (and, with CUDA graphs, before the graph is replayed)
        loss, correct, losses = self.net(x, y)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.lookahead:
            self.lookahead.after_step(self.scheduler.last_epoch)  # LambdaLR's count of steps done
        if self.ema:
            self.ema.update()
        # copies: CUDA graphs' next replay overwrites their outputs
        return loss.detach().clone(), correct.clone(), losses.clone()


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
    BatchNorm momentum, dropout scale, whitening and identity init), EMA, optimizer, schedule, scaler and loss of
    cfg: a fresh run at step 0, or the frame that Training.restore fills.
    On a CPU the process first keeps freed memory for reuse (cfg.reuse_freed_memory; device.keep_freed_memory)."""
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.reuse_freed_memory:
        keep_freed_memory()
    seed_everything(cfg.seed, cfg.deterministic)
    set_tf32(cfg.tf32)
    train_loader = DeviceLoader(*train_data, cfg.batch_size, device, train=True, augment=cfg.augment, seed=cfg.seed,
                                channels_last=cfg.channels_last, crop_padding=cfg.crop_padding,
                                low_res_epochs=cfg.low_res_epochs, low_res_size=cfg.low_res_size, cutout=cfg.cutout,
                                alternate_flips=cfg.alternate_flips,
                                uncropped_from=cfg.epochs - cfg.uncropped_epochs,
                                padding_mode=cfg.crop_padding_mode, hard_fraction=cfg.hard_fraction)
    val_loader = (DeviceLoader(*val_data, EVAL_BATCH_SIZE, device, channels_last=cfg.channels_last)
                  if val_data is not None else None)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = AlexNetCifar(len(CLASSES)).to(device, memory_format=memory_format).train()
    set_training_regularisation(model, cfg.bn_momentum, cfg.dropout_scale)
    if cfg.whiten_init:
        whiten_first_conv(model, normalize(train_loader.images[:5000], channels_last=False))
    if cfg.dirac_init:
        dirac_later_convs(model)
    groups = parameter_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, cfg.lr, cfg.bn_bias_lr_scale)
    # fused: one kernel updates every tensor of a group, where the default launches several passes per update
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(cfg, train_loader))
    precision = amp_precision(device, cfg.amp)
    objective = Objective(model, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="none"), precision)
    return Training(cfg=cfg, device=device, precision=precision, model=model,
                    ema=EMA(model, cfg.ema) if cfg.ema else None,
                    lookahead=Lookahead(model, train_loader.steps_before(cfg.epochs)) if cfg.lookahead else None,
                    objective=objective, net=compile_network(objective, device) if cfg.compile else objective,
                    optimizer=optimizer, scheduler=scheduler,
                    scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
                    train_loader=train_loader, val_loader=val_loader,
                    progress=Progress(run_dir=str(Path(cfg.log_dir) / time.strftime("run_%Y%m%d-%H%M%S"))))
