import math

import pytest
import torch

from alexnet_perf.checkpoint import last_path, load_checkpoint, save_atomic
from alexnet_perf.errors import UserError
from alexnet_perf.train import TrainConfig, lr_factor, train


def tiny_config(data_dir, tmp_path, **overrides) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, val_size=64, data_dir=str(data_dir), checkpoint=str(tmp_path / "m.pth"),
                tensorboard=False, log_every=3, device="cpu")
    return TrainConfig(**{**base, **overrides})


class StopAfter:
    """A stop flag that turns on after it has been polled n times (a deterministic Ctrl-C)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_seed_schedule_matches_cosine_annealing_stepped_per_epoch():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.075)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    for epoch in range(7):
        expected = opt.param_groups[0]["lr"]
        for step in range(epoch * 5, epoch * 5 + 5):
            assert math.isclose(0.075 * lr_factor(step, 5, 7), expected, rel_tol=1e-9, abs_tol=1e-12)
        opt.step()
        reference.step()


def test_training_learns_and_writes_weights_only_checkpoints(synthetic_cifar, tmp_path):
    result = train(tiny_config(synthetic_cifar, tmp_path, epochs=3, lr=0.05))
    assert result.epochs_done == 3 and not result.interrupted
    assert result.best_val_accuracy > 0.3  # ten colours: chance is 0.1
    best = torch.load(tmp_path / "m.pth", weights_only=True)
    assert best["epoch"] == result.best_epoch and not any(k.startswith("_orig_mod") for k in best["model_state_dict"])
    assert {"optimizer_state_dict", "scheduler_state_dict", "scaler_state_dict", "config", "metrics"} <= set(best)
    assert load_checkpoint(last_path(tmp_path / "m.pth"))["epoch"] == 3


def test_interrupted_then_resumed_run_ends_where_an_uninterrupted_one_would(synthetic_cifar, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(synthetic_cifar, straight, augment=True))
    broken = tmp_path / "broken"
    first = train(tiny_config(synthetic_cifar, broken, augment=True), stop=StopAfter(35))
    saved = load_checkpoint(last_path(broken / "m.pth"))
    assert first.interrupted and saved["epoch"] == 1 and 0 < saved["step_in_epoch"] < 16
    second = train(tiny_config(synthetic_cifar, broken, resume=True, augment=False))  # saved config wins
    assert not second.interrupted and second.epochs_done == 2
    a = load_checkpoint(last_path(straight / "m.pth"))
    b = load_checkpoint(last_path(broken / "m.pth"))
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
    for pa, pb in zip(a["optimizer_state_dict"]["state"].values(), b["optimizer_state_dict"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert a["history"][-1]["train_loss"] == pytest.approx(b["history"][-1]["train_loss"], rel=1e-5)


def test_resume_without_a_saved_run_is_a_clear_error(synthetic_cifar, tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        train(tiny_config(synthetic_cifar, tmp_path, resume=True))


def test_non_finite_loss_stops_the_run_and_keeps_the_best_checkpoint(synthetic_cifar, tmp_path):
    train(tiny_config(synthetic_cifar, tmp_path, epochs=1))
    before = (tmp_path / "m.pth").read_bytes()
    with pytest.raises(UserError, match="non-finite"):
        train(tiny_config(synthetic_cifar, tmp_path, epochs=1, lr=1e30, clip_grad_norm=0.0))
    assert (tmp_path / "m.pth").read_bytes() == before


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    save_atomic({"v": torch.ones(3)}, path)
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError):
        save_atomic({"v": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
