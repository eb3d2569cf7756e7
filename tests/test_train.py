import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexnet_perf.checkpoint import last_path, load_checkpoint, save_atomic
from alexnet_perf.errors import UserError
from alexnet_perf.train import prepare_run, train
from alexnet_perf.train_config import TrainConfig
from alexnet_perf.training import Training, build_training, first_block_parameters, lr_factor


def tiny_config(data_dir, tmp_path, **overrides) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, val_size=64, data_dir=str(data_dir), checkpoint=str(tmp_path / "m.pth"),
                tensorboard=False, log_every=3, device="cpu")
    return TrainConfig(**{"recipe": "original", **base, **overrides})


FIRST_BLOCK = [f"features.{i}.{name}" for i in (0, 1) for name in ("weight", "bias")]  # first conv and BatchNorm


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
    first = train(tiny_config(synthetic_cifar, broken, augment=True), stop=StopAfter(18))
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


def test_resume_is_exact_with_the_fast_training_options_on(synthetic_cifar, tmp_path):
    """Low-resolution epochs, cutout, alternating flips, BatchNorm-bias rate, scaled dropout, EMA with a fast
    BatchNorm momentum, lookahead (the interruption falls between two of its pulls), the hardest images' selection
    (the interruption falls inside the first epoch that selects, after images of it have new losses), the first
    block frozen from the epoch interrupted."""
    options = dict(epochs=3, augment=True, low_res_epochs=2, low_res_size=24, cutout=8, alternate_flips=True,
                   bn_bias_lr_scale=4.0, ema=0.8, bn_momentum=0.4, dropout_scale=0.5, lookahead=True,
                   hard_fraction=0.5, schedule="linear", freeze_first_block_from=2)
    train(tiny_config(synthetic_cifar, tmp_path / "straight", **options))
    first = train(tiny_config(synthetic_cifar, tmp_path / "broken", **options), stop=StopAfter(20))
    saved = load_checkpoint(last_path(tmp_path / "broken" / "m.pth"))
    assert first.interrupted and saved["epoch"] == 1 and saved["step_in_epoch"] == 5  # inside a low-res epoch
    train(tiny_config(synthetic_cifar, tmp_path / "broken", resume=True, **options))
    a = load_checkpoint(last_path(tmp_path / "straight" / "m.pth"))
    b = load_checkpoint(last_path(tmp_path / "broken" / "m.pth"))
    assert a["epoch"] == b["epoch"] == 3
    for name in ("model_state_dict", "train_state_dict"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), (name, key)


def test_the_first_block_stops_training_from_the_epoch_asked_and_the_rest_goes_on(synthetic_cifar, tmp_path):
    """Two runs alike but in length (the seed's per-epoch schedule starts both at the peak rate): the 2-epoch run's
    first convolution and BatchNorm end as the 1-epoch run left them, while its other layers and the first
    BatchNorm's running statistics moved on."""
    one = train(tiny_config(synthetic_cifar, tmp_path / "one", epochs=1, freeze_first_block_from=2))
    two = train(tiny_config(synthetic_cifar, tmp_path / "two", epochs=2, freeze_first_block_from=2))
    a = load_checkpoint(last_path(one.checkpoint))["model_state_dict"]
    b = load_checkpoint(last_path(two.checkpoint))["model_state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in FIRST_BLOCK)
    assert not torch.equal(a["features.1.running_mean"], b["features.1.running_mean"])
    assert not torch.equal(a["features.4.weight"], b["features.4.weight"])
    never = train(tiny_config(synthetic_cifar, tmp_path / "never", epochs=2))
    c = load_checkpoint(last_path(never.checkpoint))["model_state_dict"]
    assert not any(torch.equal(a[key], c[key]) for key in FIRST_BLOCK)


def test_lookahead_leaves_a_frozen_first_block_as_its_last_trained_step_left_it(synthetic_cifar, tmp_path, monkeypatch):
    """Lookahead's pulls (every 5th of the 16 steps of an epoch) move every weight back towards its slow copy; a
    frozen block's copy lags its last trained values, so a pull would move weights that get no gradient."""
    at_start, start_epoch = [], Training.start_epoch

    def recording(self: Training) -> None:
        start_epoch(self)
        at_start.append({k: v.clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(Training, "start_epoch", recording)
    result = train(tiny_config(synthetic_cifar, tmp_path, epochs=2, freeze_first_block_from=2, lookahead=True))
    end = load_checkpoint(last_path(result.checkpoint))["model_state_dict"]
    assert all(torch.equal(at_start[1][key], end[key]) for key in FIRST_BLOCK)
    assert not any(torch.equal(at_start[0][key], at_start[1][key]) for key in FIRST_BLOCK)
    assert not torch.equal(at_start[1]["features.4.weight"], end["features.4.weight"])


def test_resume_without_a_saved_run_is_a_clear_error(synthetic_cifar, tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        train(tiny_config(synthetic_cifar, tmp_path, resume=True))


def test_resuming_a_run_saved_before_an_option_existed_keeps_that_option_off(synthetic_cifar, tmp_path):
    cfg = tiny_config(synthetic_cifar, tmp_path, recipe="fast", epochs=2, val_size=64, amp=False)
    assert cfg.alternate_flips  # the recipe's value today
    train(cfg, stop=StopAfter(3))
    last = last_path(tmp_path / "m.pth")
    ckpt = load_checkpoint(last)
    del ckpt["config"]["alternate_flips"]  # as a checkpoint of a version without the option
    save_atomic(ckpt, last)
    resumed, _ = prepare_run(tiny_config(synthetic_cifar, tmp_path, recipe="fast", resume=True))
    assert not resumed.alternate_flips and resumed.epochs == 2 and resumed.amp is False


def test_non_finite_loss_stops_the_run_and_keeps_the_best_checkpoint(synthetic_cifar, tmp_path):
    train(tiny_config(synthetic_cifar, tmp_path, epochs=1))
    before = (tmp_path / "m.pth").read_bytes()
    with pytest.raises(UserError, match="non-finite.*wrote no checkpoint \\(.*m.pth.* left as they were"):
        train(tiny_config(synthetic_cifar, tmp_path, epochs=1, lr=1e30, clip_grad_norm=0.0, overwrite=True))
    assert (tmp_path / "m.pth").read_bytes() == before


def poison_weights_at(monkeypatch, step_number: int) -> None:
    """Make optimizer step number step_number (1-based, over the run) leave NaN weights behind while its own loss
    stays finite: a divergence in the last step of an epoch, which the loss alone cannot reveal."""
    real_step, calls = Training.step, []

    def step(self, x, y):
        out = real_step(self, x, y)
        calls.append(1)
        if len(calls) == step_number:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(Training, "step", step)


def test_nan_weights_from_the_last_step_of_the_first_epoch_are_never_saved(synthetic_cifar, tmp_path, monkeypatch):
    cfg = tiny_config(synthetic_cifar, tmp_path, epochs=1)
    poison_weights_at(monkeypatch, 16)  # 256 training images / batch 16: the epoch's last step
    with pytest.raises(UserError, match="weights became non-finite .*; this run wrote no checkpoint$"):
        train(cfg)
    assert not (tmp_path / "m.pth").exists() and not last_path(tmp_path / "m.pth").exists()


def test_nan_weights_in_a_later_epoch_leave_the_saved_best_as_it_was(synthetic_cifar, tmp_path, monkeypatch):
    poison_weights_at(monkeypatch, 32)  # the last step of epoch 2
    with pytest.raises(UserError, match=r"epoch 2.*best checkpoint .*m.pth \(epoch 1\)"):
        train(tiny_config(synthetic_cifar, tmp_path, epochs=2))
    best = load_checkpoint(tmp_path / "m.pth")
    assert best["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in best["model_state_dict"].values() if v.is_floating_point())


def test_a_refused_write_of_the_best_checkpoint_leaves_the_epoch_to_redo_not_a_last_one_naming_it(
        synthetic_cifar, tmp_path, monkeypatch):
    from alexnet_perf import train as train_module

    cfg = tiny_config(synthetic_cifar, tmp_path, val_size=0)  # no validation: every epoch is the best so far

    def refuse_the_second_best(snapshot, path):
        if path == cfg.checkpoint and snapshot["epoch"] == 2:
            raise UserError(f"{path}: No space left on device")
        save_atomic(snapshot, path)

    monkeypatch.setattr(train_module, "save_atomic", refuse_the_second_best)
    with pytest.raises(UserError, match=r"No space left on device; the last saved state is .*m.last.pth \(epoch 1\)"):
        train(cfg)
    last = load_checkpoint(last_path(tmp_path / "m.pth"))
    assert last["epoch"] == 1 and last["best"]["epoch"] == load_checkpoint(tmp_path / "m.pth")["epoch"] == 1


def test_a_checkpoint_with_nan_weights_is_refused_by_name(tmp_path):
    from alexnet_perf.checkpoint import model_from_checkpoint
    from alexnet_perf.model import AlexNetCifar

    state = AlexNetCifar().state_dict()
    state["classifier.2.bias"][0] = float("nan")
    with pytest.raises(UserError, match="non-finite"):
        model_from_checkpoint({"model_state_dict": state}, "x.pth")


def test_a_new_run_refuses_to_replace_an_earlier_runs_checkpoints(synthetic_cifar, tmp_path):
    first = train(tiny_config(synthetic_cifar, tmp_path, epochs=1))
    best, last = (tmp_path / "m.pth").read_bytes(), last_path(tmp_path / "m.pth").read_bytes()
    with pytest.raises(UserError, match="already exist.*--resume.*--overwrite"):
        train(tiny_config(synthetic_cifar, tmp_path, epochs=1, seed=1))
    assert (tmp_path / "m.pth").read_bytes() == best and last_path(tmp_path / "m.pth").read_bytes() == last
    again = train(tiny_config(synthetic_cifar, tmp_path, epochs=1, seed=1, overwrite=True))
    assert again.epochs_done == 1 and first.epochs_done == 1
    assert load_checkpoint(tmp_path / "m.pth")["config"]["seed"] == 1


def test_ema_weights_are_the_ones_validated_and_saved(synthetic_cifar, tmp_path):
    train(tiny_config(synthetic_cifar, tmp_path, epochs=1, ema=0.9))
    ckpt = load_checkpoint(tmp_path / "m.pth")
    live, kept = ckpt["train_state_dict"], ckpt["model_state_dict"]
    assert set(live) == set(kept)
    assert any(not torch.equal(live[k], kept[k]) for k in kept if kept[k].is_floating_point())
    assert ckpt["config"]["ema"] == 0.9


def test_resume_with_ema_ends_where_an_uninterrupted_run_would(synthetic_cifar, tmp_path):
    train(tiny_config(synthetic_cifar, tmp_path / "straight", ema=0.8))
    first = train(tiny_config(synthetic_cifar, tmp_path / "broken", ema=0.8), stop=StopAfter(20))
    assert first.interrupted
    train(tiny_config(synthetic_cifar, tmp_path / "broken", resume=True))
    a = load_checkpoint(last_path(tmp_path / "straight" / "m.pth"))
    b = load_checkpoint(last_path(tmp_path / "broken" / "m.pth"))
    for name in ("model_state_dict", "train_state_dict"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), (name, key)


def test_training_state_round_trips_through_a_checkpoint(synthetic_cifar, tmp_path):
    cfg = tiny_config(synthetic_cifar, tmp_path, epochs=3, ema=0.5, augment=True)
    data = ((torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8).numpy(), (torch.arange(64) % 10).numpy()))
    a = build_training(cfg, data)
    for x, y in a.train_loader.epoch(0):
        a.step(x, y)
    a.progress.epoch, a.progress.history = 1, [{"epoch": 1}]
    b = build_training(cfg, data)
    b.restore(a.checkpoint({}))
    assert b.progress == a.progress
    for sa, sb in ((a.model, b.model), (a.evaluated_model, b.evaluated_model)):
        for (k, va), vb in zip(sa.state_dict().items(), sb.state_dict().values()):
            assert torch.equal(va, vb), k
    assert b.scheduler.state_dict()["last_epoch"] == a.scheduler.state_dict()["last_epoch"] == 4


def test_foreign_python_objects_in_a_checkpoint_are_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"format": "alexnet_perf/checkpoint-v1", "payload": StopAfter(1)}, path)
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "StopAfter" in message and "refused" in message
    assert "weights_only" not in message and "False" not in message and "\n" not in message


def test_progress_prints_an_estimate_of_the_run_and_points_cpu_users_at_the_fast_recipe(
        synthetic_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("alexnet_perf.progress.LONG_RUN_SECONDS", 0)
    train(tiny_config(synthetic_cifar, tmp_path, epochs=3))
    out = capsys.readouterr().out
    assert out.count("estimate: 2 more epochs at") == 1 and "finishing about" in out
    assert "--recipe fast" in out
    assert out.index("epoch 1/3") < out.index("estimate:") < out.index("epoch 2/3")


def test_the_fast_recipe_gets_no_pointer_to_itself(synthetic_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("alexnet_perf.progress.LONG_RUN_SECONDS", 0)
    train(TrainConfig("fast", epochs=2, batch_size=16, amp=False, data_dir=str(synthetic_cifar),
                      checkpoint=str(tmp_path / "m.pth"), tensorboard=False, device="cpu"))
    out = capsys.readouterr().out
    assert "estimate: 1 more epochs" in out and "--recipe fast" not in out


def test_amp_run_on_a_cpu_without_bf16_says_it_trains_in_fp32(synthetic_cifar, tmp_path, monkeypatch, capsys):
    import alexnet_perf.device as device

    for native in (False, True):
        monkeypatch.setattr(device, "cpu_has_bf16", lambda: native)
        train(TrainConfig("fast", epochs=1, batch_size=16, amp=True, data_dir=str(synthetic_cifar), overwrite=True,
                          checkpoint=str(tmp_path / "m.pth"), tensorboard=False, device="cpu"))
        out = capsys.readouterr().out
        assert out.startswith("--amp: this CPU has no native bf16") != native and "epoch 1/1" in out


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    save_atomic({"v": torch.ones(3)}, path)
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(UserError, match="disk full"):
        save_atomic({"v": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


@pytest.mark.slow
def test_compiled_cpu_step_uses_no_scatter_for_max_pool_backward_and_matches_eager():
    """The compiled CPU training step runs max-pool's backward without inductor's scatter_add decomposition (which
    made --compile slower than eager on CPUs; compilation.py) and computes the same gradients as eager."""
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8).numpy()
    data = (images, (torch.arange(16) % 10).numpy())
    grads = {}
    for compiled in (False, True):
        torch.compiler.reset()
        t = build_training(TrainConfig("original", batch_size=8, device="cpu", val_size=0, compile=compiled,
                                       clip_grad_norm=0, lr=1e-9, tensorboard=False), data)
        x, y = next(iter(t.train_loader.epoch(0)))
        t.model.eval()  # no dropout: both runs see the same function
        t.step(x, y)
        with torch.profiler.profile() as prof:
            t.step(x, y)
        names = {e.name for e in prof.events()}
        assert "aten::scatter_reduce_" not in names and "aten::scatter_add_" not in names
        grads[compiled] = [p.grad.clone() for p in t.model.parameters()]
    for eager, comp in zip(grads[False], grads[True]):
        torch.testing.assert_close(comp, eager, rtol=1e-4, atol=1e-5)


def test_the_compiled_step_with_a_frozen_first_block_skips_its_backward_and_leaves_it_untouched():
    """--compile with --freeze-first-block-from: the step compiled once the block is frozen runs four convolution
    backwards instead of five and gives the block no gradient, so the update leaves it as it was, and the other
    layers get eager's gradients (a rate of 1e-9: the first step leaves both runs' weights alike)."""
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8).numpy()
    data = (images, (torch.arange(16) % 10).numpy())
    grads, backwards = {}, {}
    for compiled in (False, True):
        torch.compiler.reset()
        t = build_training(TrainConfig("original", batch_size=8, device="cpu", val_size=0, compile=compiled,
                                       clip_grad_norm=0, lr=1e-9, freeze_first_block_from=2, tensorboard=False),
                           data)
        x, y = next(iter(t.train_loader.epoch(0)))
        t.model.eval()  # no dropout: both runs see the same function
        t.start_epoch()
        t.step(x, y)  # compiles (a compile runs operators of its own), then the profiled step
        with torch.profiler.profile() as prof:
            t.step(x, y)
        backwards[compiled, "trained"] = sum(e.name == "aten::convolution_backward" for e in prof.events())
        t.progress.epoch = 1
        t.start_epoch()
        t.step(x, y)  # compiles again: the graph is specialised on the objective's frozen flag
        block = [p.detach().clone() for p in first_block_parameters(t.model)]
        with torch.profiler.profile() as prof:
            t.step(x, y)
        backwards[compiled, "frozen"] = sum(e.name == "aten::convolution_backward" for e in prof.events())
        assert all(p.grad is None for p in first_block_parameters(t.model))
        assert all(torch.equal(p, q) for p, q in zip(first_block_parameters(t.model), block))
        grads[compiled] = [p.grad.clone() for p in t.model.parameters() if p.grad is not None]
    assert backwards == {(c, "trained"): 5 for c in (False, True)} | {(c, "frozen"): 4 for c in (False, True)}
    assert len(grads[True]) == len(grads[False]) == 18  # 22 tensors, the first block's 4 left out
    for eager, comp in zip(grads[False], grads[True]):
        torch.testing.assert_close(comp, eager, rtol=1e-4, atol=1e-5)


def test_compiled_step_computes_the_loss_and_correct_count_in_its_graph_with_eagers_values():
    """--compile compiles the loss, the count of correct predictions and each image's loss with the network (run
    eagerly around it, their operators cost 2-3 % of a CPU step): no eager log-softmax or argmax is left, and the
    values are eager's."""
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8).numpy()
    data = (images, (torch.arange(16) % 10).numpy())
    results = {}
    for compiled in (False, True):
        torch.compiler.reset()
        t = build_training(TrainConfig("fast", batch_size=8, device="cpu", val_size=0, compile=compiled, amp=False,
                                       tensorboard=False), data)
        x, y = next(iter(t.train_loader.epoch(0)))
        t.model.eval()  # no dropout or batch statistics: both runs see the same function
        t.net(x, y)
        with torch.profiler.profile() as prof:
            loss, correct, losses = t.net(x, y)
        results[compiled] = (loss.item(), correct.item(), {e.name for e in prof.events()}, losses)
    assert {"aten::_log_softmax", "aten::argmax"} <= results[False][2]
    assert not {"aten::_log_softmax", "aten::argmax"} & results[True][2]
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5) and results[True][1] == results[False][1]
    torch.testing.assert_close(results[True][3], results[False][3], rtol=1e-5, atol=1e-6)
    assert results[False][3].mean().item() == pytest.approx(results[False][0], rel=1e-6)


FAULTS_AFTER_BUILD = """
import resource, sys
import numpy as np, torch
from alexnet_perf.train_config import TrainConfig
from alexnet_perf.training import build_training
build_training(TrainConfig(batch_size=4, device="cpu", val_size=0, reuse_freed_memory=sys.argv[1] == "reuse",
                           tensorboard=False), (np.zeros((8, 3, 32, 32), np.uint8), np.arange(8) % 10))
faults = []
for _ in range(15):  # the first few settle glibc's bins
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 * 2**20, dtype=torch.uint8)  # a batch-512 activation's size, written, then freed
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[6:])[4])  # the median of the settled steps
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-fault counts and mallopt are glibc/Linux")
def test_cpu_training_keeps_freed_memory_unless_told_not_to():
    """After build_training, a large tensor freed and made again reuses its pages (no fresh page faults), unless
    --no-reuse-freed-memory: then each one is a fresh mmap whose pages fault in again."""
    def faults(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", FAULTS_AFTER_BUILD, mode], capture_output=True, text=True,
                             timeout=120, check=True)
        return float(out.stdout)

    assert faults("reuse") <= 2
    assert faults("default") >= 16


@pytest.mark.parametrize("tf32", [False, True])
def test_training_sets_tf32_as_configured_and_records_it(tf32):
    """cuDNN's default is TF32 on: an fp32 run must turn it off explicitly, and the checkpoint's configuration says
    which one ran."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not tf32
    try:
        images = np.zeros((8, 3, 32, 32), dtype=np.uint8)
        t = build_training(TrainConfig(batch_size=4, device="cpu", val_size=0, tf32=tf32, tensorboard=False),
                           (images, np.arange(8) % 10))
        assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
        assert t.checkpoint({})["config"]["tf32"] is tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_last_steps_gradients_are_freed_before_the_forward():
    """zero_grad comes before the forward: otherwise the previous step's gradients stay allocated through this
    step's forward (and are still alive while a CUDA graph of the forward and backward replays)."""
    images = np.zeros((16, 3, 32, 32), dtype=np.uint8)
    t = build_training(TrainConfig(batch_size=8, device="cpu", val_size=0, tensorboard=False),
                       (images, np.arange(16) % 10))
    alive = []
    t.model.register_forward_pre_hook(lambda module, args: alive.append(
        any(p.grad is not None for p in module.parameters())))
    for x, y in t.train_loader.epoch(0):
        t.step(x, y)
    assert alive == [False, False]
