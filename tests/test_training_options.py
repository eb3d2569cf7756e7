"""alexnet_perf.training's recipe options: schedule shapes, weight-decay and BatchNorm-bias parameter groups, and
the dropout scale, alone and as build_training puts them together."""

import pytest
import torch
from torch import nn

from alexnet_perf.errors import UserError
from alexnet_perf.model import AlexNetCifar
from alexnet_perf.train_config import TrainConfig
from alexnet_perf.training import build_training, lr_factor, parameter_groups


def test_linear_schedule_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, 10, 5, "linear", warmup_epochs=1) for s in range(50)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(1 / 40)  # one step before the end
    assert lr_factor(50, 10, 5, "linear", 1) == 0.0


def test_warm_up_of_a_fraction_of_a_step_never_exceeds_the_peak_rate():
    factors = [lr_factor(s, 3, 4, "linear", warmup_epochs=0.5) for s in range(12)]  # warm-up of 1.5 steps
    assert max(factors) == 1.0 and factors[0] == pytest.approx(2 / 3)


def test_cosine_schedule_is_half_at_the_middle_of_the_decay():
    assert lr_factor(0, 10, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(20, 10, 4, "cosine") == pytest.approx(0.5)
    assert lr_factor(40, 10, 4, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_norm_and_bias_parameters_can_be_exempt_from_weight_decay():
    model = AlexNetCifar()
    decayed, exempt = parameter_groups(model, 5e-4, decay_norm_and_bias=False)
    assert exempt["weight_decay"] == 0.0 and decayed["weight_decay"] == 5e-4
    assert {p.ndim for p in decayed["params"]} == {2, 4} and {p.ndim for p in exempt["params"]} == {1}
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))
    (single,) = parameter_groups(model, 2e-3, decay_norm_and_bias=True)
    assert len(single["params"]) == len(list(model.parameters()))


def test_batchnorm_biases_get_their_own_learning_rate():
    model = AlexNetCifar()
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    groups = parameter_groups(model, 5e-4, decay_norm_and_bias=False, lr=0.2, bn_bias_lr_scale=8)
    assert len(groups) == 3 and {id(p) for p in groups[2]["params"]} == bn_biases
    assert groups[2]["lr"] == pytest.approx(1.6) and groups[2]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert not bn_biases & {id(p) for g in groups[:2] for p in g["params"]}
    assert len(parameter_groups(model, 5e-4, False, lr=0.2, bn_bias_lr_scale=1)) == 2


def test_the_schedule_scales_the_batchnorm_bias_rate_with_the_others():
    data = (torch.zeros(64, 3, 32, 32, dtype=torch.uint8).numpy(), (torch.arange(64) % 10).numpy())
    t = build_training(TrainConfig("fast", epochs=2, batch_size=16, amp=False, device="cpu", val_size=0,
                                   whiten_init=False, bn_bias_lr_scale=4.0), data)
    for x, y in list(t.train_loader.epoch(0))[:3]:
        t.step(x, y)
    lrs = [g["lr"] for g in t.optimizer.param_groups]
    assert lrs[-1] == pytest.approx(4 * lrs[0]) and 0 < lrs[0] < t.cfg.lr


def _dropout_rates(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def test_dropout_scale_changes_only_the_training_dropout_rates():
    data = (torch.zeros(32, 3, 32, 32, dtype=torch.uint8).numpy(), (torch.arange(32) % 10).numpy())
    seed_rates = _dropout_rates(AlexNetCifar())
    assert seed_rates == [0.1, 0.1, 0.5]
    half = build_training(TrainConfig(batch_size=16, device="cpu", dropout_scale=0.5), data)
    assert _dropout_rates(half.model) == pytest.approx([p / 2 for p in seed_rates])
    off = build_training(TrainConfig(batch_size=16, device="cpu", dropout_scale=0.0), data)
    assert _dropout_rates(off.model) == [0.0, 0.0, 0.0] and _dropout_rates(AlexNetCifar()) == seed_rates
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():  # no dropout: training-mode outputs no longer depend on the dropout RNG
        torch.manual_seed(0)
        a = off.model(x)
        torch.manual_seed(1)
        torch.testing.assert_close(off.model(x), a)


def test_amp_on_a_cpu_without_bf16_trains_in_fp32(monkeypatch):
    import alexnet_perf.device as device

    data = (torch.zeros(32, 3, 32, 32, dtype=torch.uint8).numpy(), (torch.arange(32) % 10).numpy())
    for native, precision in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(device, "cpu_has_bf16", lambda: native)
        t = build_training(TrainConfig(batch_size=16, device="cpu", amp=True, whiten_init=False), data)
        assert t.precision == precision


def test_the_update_is_sgds_fused_kernel_and_follows_nesterovs_formula_in_every_group():
    data = (torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8).numpy(), (torch.arange(32) % 10).numpy())
    t = build_training(TrainConfig("fast", epochs=2, batch_size=16, amp=False, device="cpu", val_size=0), data)
    x, y = next(iter(t.train_loader))
    t.step(x, y)  # momentum buffers, and the scheduled learning rates
    t.objective(x, y)[0].backward()
    groups = t.optimizer.param_groups
    assert len(groups) == 3 and all(g["fused"] for g in groups)
    expected = []
    for g in groups:
        for p in g["params"]:
            d = p.grad + g["weight_decay"] * p.detach()
            buffer = 0.9 * t.optimizer.state[p]["momentum_buffer"] + d
            expected.append(p.detach() - g["lr"] * (d + 0.9 * buffer))
    t.optimizer.step()
    for p, e in zip((p for g in groups for p in g["params"]), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)


def test_identity_init_is_applied_only_when_asked():
    data = (torch.zeros(32, 3, 32, 32, dtype=torch.uint8).numpy(), (torch.arange(32) % 10).numpy())
    centre = {}
    for dirac in (False, True):
        t = build_training(TrainConfig(batch_size=16, device="cpu", whiten_init=False, dirac_init=dirac), data)
        conv = [m for m in t.model.modules() if isinstance(m, nn.Conv2d)][3]  # 128 → 128
        centre[dirac] = conv.weight[:, :, 1, 1].detach()
    torch.testing.assert_close(centre[True], torch.eye(128))
    assert not torch.allclose(centre[False], torch.eye(128), atol=0.05)


def test_uncropped_epochs_are_the_last_epochs_of_the_run():
    data = (torch.zeros(32, 3, 32, 32, dtype=torch.uint8).numpy(), (torch.arange(32) % 10).numpy())
    for uncropped, first in ((0, 6), (2, 4)):
        t = build_training(TrainConfig(epochs=6, batch_size=16, device="cpu", augment=True, whiten_init=False,
                                       uncropped_epochs=uncropped), data)
        assert t.train_loader.uncropped_from == first


def test_the_crop_padding_mode_reaches_the_training_loader():
    images = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8)
    data = (images.numpy(), (torch.arange(32) % 10).numpy())
    border = {}
    for mode in ("zeros", "reflect"):
        t = build_training(TrainConfig(batch_size=16, device="cpu", augment=True, crop_padding=2, whiten_init=False,
                                       crop_padding_mode=mode), data)
        border[mode] = t.train_loader.words[:, 0]
    assert (border["zeros"] == 0).all() and (border["reflect"] != 0).all()


def test_with_a_hard_fraction_the_schedule_spans_the_shorter_epochs():
    data = (torch.zeros(160, 3, 32, 32, dtype=torch.uint8).numpy(), (torch.arange(160) % 10).numpy())
    t = build_training(TrainConfig(epochs=3, batch_size=16, device="cpu", whiten_init=False, schedule="linear",
                                   warmup_epochs=0.5, hard_fraction=0.5), data)
    assert [t.train_loader.batches(e) for e in range(3)] == [10, 5, 5]
    factor = t.scheduler.lr_lambdas[0]
    assert factor(4) == pytest.approx(1.0) and factor(3) < 1  # warm-up: half the first epoch's 10 steps
    assert 0 < factor(19) < 0.1 and factor(20) == 0.0  # down to 0 after the run's 20 steps, not 30


def test_a_hard_fraction_needs_a_per_step_schedule():
    with pytest.raises(UserError, match="--hard-fraction below 1 needs a per-step --schedule"):
        TrainConfig(hard_fraction=0.5, schedule="cosine-epoch")
    assert TrainConfig(recipe="fast").hard_fraction < 1
