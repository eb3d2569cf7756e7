"""Progress of a training run: TensorBoard scalars and histograms (optional), one live bar over the whole run on a
terminal, a line per epoch, and after the first epoch an estimate of when the run ends."""

from __future__ import annotations

import sys
import time


from .training import Training

LONG_RUN_SECONDS = 600  # a CPU run of the original recipe estimated longer than this gets a pointer to --recipe fast


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes} min" if minutes < 90 else \
        f"{minutes // 60} h {minutes % 60:02d} min"


class ProgressLog:
    """TensorBoard (optional) plus progress output: one live bar over the whole run on a terminal, a line per
    epoch always, and after this invocation's first epoch an estimate of when the run ends."""

    def __init__(self, t: Training) -> None:
        self.tty = sys.stderr.isatty()
        self.writer = None
        self.bar = None
        self.estimated = False
        done = t.train_loader.steps_before(t.progress.epoch) + t.progress.step_in_epoch
        if t.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(t.progress.run_dir, purge_step=done or None)
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=t.train_loader.steps_before(t.cfg.epochs), initial=done, unit="step",
                            dynamic_ncols=True, leave=False)

    def __enter__(self) -> ProgressLog:
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
