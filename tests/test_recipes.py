"""alexnet_perf.recipes and TrainConfig's recipe field: named presets of real options, applied in Python and on
the command line, overridable by any other flag, and rebuilt by the command line a run records."""

import dataclasses

import pytest

from alexnet_perf import flags
from alexnet_perf.errors import UserError
from alexnet_perf.recipes import DEFAULT_RECIPE, RECIPES
from alexnet_perf.train_config import TrainConfig


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


def test_help_with_a_recipe_shows_that_recipes_defaults(capsys):
    with pytest.raises(SystemExit):
        flags.run(TrainConfig, lambda c: 0, "train", "", ["--recipe", "fast", "--help"])
    assert f"number of epochs; >= 1 (default: {RECIPES['fast']['epochs']})" in capsys.readouterr().out
