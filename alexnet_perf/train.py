"""Training: `python -m alexnet_perf.train` (the `fast` recipe by default) and the importable train(config).

One loop for every configuration (train_config.py): eager or torch.compile, fp32 or bf16/fp16 autocast,
channels-last or not, over the state training.py builds. Checkpoints are written atomically each epoch (best on
validation accuracy, and the last one for --resume), never with non-finite weights; Ctrl-C or SIGTERM saves the exact
mid-epoch state, and --resume continues as if the run had never stopped. An existing run is never replaced unless
--overwrite says so, and a run holds its checkpoint for its whole duration, so that two runs started together on one
checkpoint cannot both proceed.
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

import torch
from torch import nn

from . import flags
from .atomic import check_writable, check_writable_dir, claim_output
from .checkpoint import last_path, load_checkpoint, save_atomic
from .compilation import warm_compiler_keys
from .device import resolve_device, synchronize
from .errors import Terminated, UserError
from .evaluate import EvalMetrics, evaluate_model, format_snapshot, score_checkpoint
from .isa_probe import remember_vec_isa_checks
from .progress import ProgressLog
from .train_config import RUNTIME_FIELDS, TrainConfig, given_settings
from .training import Training, build_training, load_splits, zero_sums

PROG = "python -m alexnet_perf.train"


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


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
    # an option newer than the checkpoint takes its dataclass default (off), as that run trained, not its recipe's
    saved = {f.name: ckpt["config"].get(f.name, f.default) for f in fields(TrainConfig)}
    conflicting = [name for name, value in given_settings(cfg).items() if saved[name] != value]
    if conflicting:
        name = conflicting[0]
        raise UserError(f"--resume continues {last} with its saved configuration, but {flags.flag(name)} "
                        f"{getattr(cfg, name)} differs from its {saved[name]}: drop the flag, or start a new run with "
                        f"--overwrite or another --checkpoint")
    resumed = replace(TrainConfig(**saved), **{k: getattr(cfg, k) for k in RUNTIME_FIELDS})
    if ckpt["epoch"] >= resumed.epochs:
        raise UserError(f"{last}: that run already finished all {resumed.epochs} epochs; nothing to resume")
    print(f"resuming {last}: epoch {ckpt['epoch'] + 1}, batch {ckpt['step_in_epoch']} (saved configuration kept)")
    return resumed, ckpt


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


def train_epoch(t: Training, log: ProgressLog, stop: StopFlag | None) -> bool:
    """Run the rest of the current epoch; True when stop was set (the exact state is then saved to the last
    checkpoint). Losses are read back every --log-every steps, and a non-finite one ends the run."""
    p, cfg = t.progress, t.cfg
    window: list[tuple[torch.Tensor, torch.Tensor]] = []
    synchronize(t.device)
    tick = time.perf_counter()
    t.start_epoch()
    loader = t.train_loader
    batches, steps_before = loader.batches(p.epoch), loader.steps_before(p.epoch)
    for i, (x, y) in enumerate(loader.epoch(p.epoch, p.step_in_epoch), start=p.step_in_epoch):
        loss, correct, image_losses = t.step(x, y)
        window.append((loss, correct))
        if cfg.hard_fraction < 1:
            loader.record(image_losses)
        p.step_in_epoch = i + 1
        last = p.step_in_epoch == batches
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
            log.batches(t, steps_before + i + 1, losses, [c / cfg.batch_size for c in corrects])
            window.clear()
        if stopping:
            if not _all_finite(t.model):
                raise _diverged(t, f"at epoch {p.epoch + 1}, batch {i + 1}: the weights became non-finite")
            save(t, t.checkpoint({}), last_path(cfg.checkpoint))
            return True
    return False


def last_lr(t: Training) -> float:
    """The learning rate of the current epoch's last step (the scheduler has already moved past it)."""
    return t.cfg.lr * t.scheduler.lr_lambdas[0](t.train_loader.steps_before(t.progress.epoch + 1) - 1)


def finish_epoch(t: Training, log: ProgressLog, epoch_start: float) -> None:
    """Validate, record the epoch, and save the last (and, if it improved, the best) checkpoint, after checking
    that the kept weights and the validation result are finite."""
    p, cfg = t.progress, t.cfg
    metrics = {"epoch": p.epoch + 1, "train_loss": p.sums["loss"] / p.sums["seen"],
               "train_accuracy": p.sums["correct"] / p.sums["seen"], "lr": last_lr(t),
               "images_per_second": p.sums["seen"] / p.sums["seconds"], "train_seconds": p.sums["seconds"]}
    if not (_all_finite(t.model) and _all_finite(t.evaluated_model)):
        raise _diverged(t, f"in epoch {p.epoch + 1}: the weights became non-finite")
    val: EvalMetrics | None = None
    if t.val_loader is not None:
        val = evaluate_model(t.evaluated_model, t.val_loader, t.precision, cfg.label_smoothing, tta=cfg.tta)
        if not math.isfinite(val.loss):
            raise _diverged(t, f"in epoch {p.epoch + 1}: the validation loss is non-finite")
        metrics.update(val_loss=val.loss, val_accuracy=val.accuracy, val_seconds=val.seconds)
    improved = val is None or val.accuracy > p.best_val_accuracy
    p.epoch, p.step_in_epoch = p.epoch + 1, 0
    p.history.append(metrics)
    p.sums = zero_sums()
    if improved:
        p.best_val_accuracy, p.best_epoch = (val.accuracy if val else -1.0), p.epoch
    snapshot = t.checkpoint(metrics)
    if improved:  # before the last checkpoint, which --resume continues from: it never names a best one not written
        save(t, snapshot, cfg.checkpoint)
    save(t, snapshot, last_path(cfg.checkpoint))
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
    if cfg.compile:
        warm_compiler_keys()
        remember_vec_isa_checks()
    data_start = time.perf_counter()
    splits = load_splits(cfg)
    data_seconds = time.perf_counter() - data_start
    t = build_training(cfg, *splits)
    if cfg.amp and t.precision == "fp32":
        print("--amp: this CPU has no native bf16 (AVX-512 BF16, AMX or Arm BF16), where emulated bf16 is slower than "
              "fp32; training in fp32", flush=True)
    if ckpt is not None:
        t.restore(ckpt)
    interrupted = False
    with ProgressLog(t) as log:
        while t.progress.epoch < cfg.epochs and not interrupted:
            epoch_start = time.perf_counter()
            interrupted = train_epoch(t, log, stop)
            if not interrupted:
                finish_epoch(t, log, epoch_start)
    return run_result(cfg.checkpoint, t.progress.history, t.progress.best_val_accuracy, t.progress.best_epoch,
                      wall_seconds=time.perf_counter() - wall_start, data_seconds=data_seconds, interrupted=interrupted)


def run_result(checkpoint: str, history: list[dict], best_val_accuracy: float, best_epoch: int, *,
               wall_seconds: float, data_seconds: float, interrupted: bool) -> TrainResult:
    """A run's result from its epoch history (what a checkpoint keeps): training and validation times summed over
    every epoch, including those of earlier parts of a resumed run."""
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_seconds"] * h["images_per_second"] for h in history)
    return TrainResult(best_val_accuracy=best_val_accuracy if best_val_accuracy >= 0 else None, best_epoch=best_epoch,
                       epochs_done=len(history), wall_seconds=wall_seconds, data_seconds=data_seconds,
                       train_seconds=train_seconds, eval_seconds=sum(h.get("val_seconds", 0.0) for h in history),
                       images_per_second=images / train_seconds if train_seconds else 0.0,
                       interrupted=interrupted, checkpoint=checkpoint, history=history)


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
    "default recipe, fast, reaches the original run's 83.18% by its measure in under 2 minutes on a 2-core CPU "
    "with AVX-512 BF16 (about 5 in fp32 on 2 AVX2 cores); --recipe best|original switch to the others, and any flag "
    "overrides the recipe. The best-validation checkpoint goes to --checkpoint, the last epoch's beside it; an "
    "existing one is never replaced unless --overwrite is given, and a second run on the same checkpoint is refused "
    "while the first holds it. Ctrl-C or SIGTERM saves the run (exit status 130 or 143) and --resume continues it "
    "exactly.")

if __name__ == "__main__":
    flags.exit_with(flags.run(TrainConfig, main, PROG, DESCRIPTION))
