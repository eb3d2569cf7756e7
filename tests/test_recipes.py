"""The options the fast/best recipes are made of: schedule shapes, weight-decay groups, EMA, TTA, presets."""

import dataclasses

import pytest
import torch
from torch import nn

from alexnet_perf import flags
from alexnet_perf.ema import EMA
from alexnet_perf.errors import UserError
from alexnet_perf.evaluate import predict
from alexnet_perf.model import AlexNetCifar
from alexnet_perf.recipes import DEFAULT_RECIPE, RECIPES
from alexnet_perf.train_config import TrainConfig
from alexnet_perf.training import lr_factor, parameter_groups


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


def test_ema_update_is_an_exponential_moving_average_of_weights_and_bn_statistics():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    start = [t.clone() for t in (*ema.model.parameters(), *ema.model.buffers()) if t.is_floating_point()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update()
    now = [t for t in (*ema.model.parameters(), *ema.model.buffers()) if t.is_floating_point()]
    live = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    for s0, s1, w in zip(start, now, live):
        torch.testing.assert_close(s1, 0.9 * s0 + 0.1 * w)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_rejects_a_decay_outside_zero_one():
    with pytest.raises(ValueError):
        EMA(nn.Linear(1, 1), 1.0)


def test_tta_averages_the_logits_of_image_and_mirror_image():
    model = AlexNetCifar().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) + model(x.flip(3))) / 2
        torch.testing.assert_close(predict(model, x, tta=True), expected)
        torch.testing.assert_close(predict(model, x, tta=False), model(x))


def test_every_recipe_names_only_real_options():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for recipe, values in RECIPES.items():
        assert set(values) <= names, recipe
        assert TrainConfig(recipe).recipe == recipe
    assert TrainConfig(DEFAULT_RECIPE) == TrainConfig() and DEFAULT_RECIPE == "fast"
    assert TrainConfig("original") == TrainConfig(**{f.name: f.default for f in dataclasses.fields(TrainConfig)
                                                     if f.name != "recipe"}, recipe="original")


def test_a_recipe_named_in_python_applies_its_settings():
    cfg = TrainConfig(recipe="fast", epochs=3)
    assert cfg.epochs == 3 and cfg.recipe == "fast"
    assert {k: getattr(cfg, k) for k in RECIPES["fast"] if k != "epochs"} == \
        {k: v for k, v in RECIPES["fast"].items() if k != "epochs"}


def test_an_unknown_recipe_is_a_user_error():
    with pytest.raises(UserError, match="unknown recipe 'quick'"):
        TrainConfig(recipe="quick")


def test_recipe_flag_sets_defaults_that_other_flags_override():
    cfg = flags.parse(TrainConfig, "train", "", ["--recipe", "fast", "--epochs", "3", "--no-amp"])
    assert cfg == TrainConfig("fast", epochs=3, amp=False)
    assert cfg.lr == RECIPES["fast"]["lr"] != TrainConfig("original").lr


def test_command_line_rebuilds_a_recipe_configuration():
    cfg = TrainConfig("fast", epochs=12, amp=False, seed=3)
    line = flags.command_line("train", cfg)
    assert line.startswith("train --recipe fast ")
    assert flags.parse(TrainConfig, "train", "", line.split()[1:]) == cfg


def test_whitening_filters_decorrelate_patches_to_unit_variance():
    from alexnet_perf.whitening import patch_whitening_filters

    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    images = torch.einsum("nchw,dc->ndhw", torch.randn(2000, 3, 8, 8), mix)  # correlated channels
    filters = patch_whitening_filters(images, kernel_size=3, out_channels=8)
    assert filters.shape == (8, 3, 3, 3)
    torch.testing.assert_close(filters[4:], -filters[:4])
    out = torch.nn.functional.conv2d(images, filters[:4]).permute(1, 0, 2, 3).reshape(4, -1)
    cov = torch.cov(out)
    torch.testing.assert_close(cov, torch.eye(4), atol=0.05, rtol=0.05)


def test_results_sections_are_replaced_in_place_and_others_kept(tmp_path):
    from alexnet_perf.records import update_section

    path = tmp_path / "RESULTS.md"
    update_section(path, "a", "first A")
    update_section(path, "b", "only B")
    update_section(path, "a", "second A")
    text = path.read_text()
    assert "second A" in text and "first A" not in text and "only B" in text
    assert text.index("second A") < text.index("only B")


def test_help_with_a_recipe_shows_that_recipes_defaults(capsys):
    with pytest.raises(SystemExit):
        flags.run(TrainConfig, lambda c: 0, "train", "", ["--recipe", "fast", "--help"])
    assert f"number of epochs; >= 1 (default: {RECIPES['fast']['epochs']})" in capsys.readouterr().out


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
    from alexnet_perf.training import build_training

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
    from alexnet_perf.training import build_training

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
