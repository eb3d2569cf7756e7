"""Training throughput: images/s of one training step of the `fast` recipe (next batch from the device-resident
loader with its augmentation, forward, loss, backward, SGD update), per configuration and batch size.

The state and the step are train.py's own (build_training, Training.step); only the images are random. The GPU
cases run where the `gpu_device` fixture says (the CPU stands in with --gpu-stand-in).
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import pytest
import torch

from alexnet_perf.artifacts import INPUT_SHAPE
from alexnet_perf.compilation import compile_network
from alexnet_perf.loader import DeviceLoader
from alexnet_perf.device import TORCH_VARIANTS, synchronize
from alexnet_perf.recipes import RECIPES
from alexnet_perf.train_config import TrainConfig
from alexnet_perf.training import Training, build_training

RECIPE = "fast"
BATCH_SIZES = (128, 256, 512)  # the tuned recipes' batch, and two larger ones where the step's rate levels off
LOADER_BATCHES = 4  # the loader holds this many batches of images and cycles through epochs of them
VARIANTS = {variant.name("amp"): variant for variant in TORCH_VARIANTS}  # by id: amp stands for autocast's pick


def _forever(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for epoch in itertools.count():
        yield from loader.epoch(epoch)


def _measure_step(measure, t: Training, **case) -> None:
    """Time t's training step on the next batch of its loader (synchronised on GPUs), with the case's extra_info
    (TF32 recorded on GPUs, where it applies)."""
    batches = _forever(t.train_loader)

    def step() -> None:
        t.step(*next(batches))
        synchronize(t.device)

    measure(step, kind="training", batch_size=t.cfg.batch_size, device=t.device,
            precision=t.precision,
            tf32=t.cfg.tf32 if t.device.type == "cuda" else None, **case)


def _device(device: str, request: pytest.FixtureRequest) -> str:
    """cpu, or for the GPU cases the gpu_device fixture's device (skipping where there is none)."""
    return device if device == "cpu" else request.getfixturevalue("gpu_device").type


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("config_id", VARIANTS)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_training_step(measure, make_images, compiled_graphs, request: pytest.FixtureRequest, device: str,
                       config_id: str, batch_size: int) -> None:
    variant = VARIANTS[config_id]
    cfg = TrainConfig(RECIPE, batch_size=batch_size, amp=variant.amp, channels_last=variant.channels_last,
                      compile=variant.compiled, device=_device(device, request), val_size=0,
                      low_res_epochs=0)  # full-size images
    compiled_graphs.prepare((batch_size, *INPUT_SHAPE))
    images = make_images(LOADER_BATCHES * batch_size)
    t = build_training(cfg, (images, np.arange(len(images)) % 10))
    _measure_step(measure, t, backend=variant.name(t.precision), reference=not variant.amp,
                  threads=torch.get_num_threads() if t.device.type == "cpu" else None)


RECIPE_VARIANTS = {"eager": None, "compiled": "default", "cuda-graphs": "reduce-overhead"}  # torch.compile mode


def compile_mode(variant: str, device: torch.device) -> str | None:
    """torch.compile's mode for a recipe variant on device (None: eager). CUDA graphs exist only on GPUs: on the
    CPU that stands in for one, the variant compiles as the compiled one does (and so reuses its graph)."""
    mode = RECIPE_VARIANTS[variant]
    return "default" if mode == "reduce-overhead" and device.type != "cuda" else mode


@pytest.mark.gpu
@pytest.mark.parametrize("variant", RECIPE_VARIANTS)
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_step_cuda(measure, make_images, compiled_graphs, gpu_device: torch.device, recipe: str,
                          variant: str) -> None:
    """Each recipe's own step (its batch size, precision, augmentation) on a GPU, eager, compiled and with CUDA
    graphs; the report turns it into the recipe's GPU time per epoch and of its whole run. Recipes with the same
    network step reuse one compiled graph (compiled_graphs)."""
    cfg = TrainConfig(recipe, device=gpu_device.type, compile=False,
                      low_res_epochs=0)  # the full-size (slowest) epochs
    compiled_graphs.prepare((cfg.batch_size, *INPUT_SHAPE))
    images = make_images(LOADER_BATCHES * cfg.batch_size)
    t = build_training(cfg, (images, np.arange(len(images)) % 10))
    mode = compile_mode(variant, t.device)
    if mode is not None:
        t.net = compile_network(t.objective, t.device, mode)
    images_per_epoch = (50_000 - cfg.val_size) // cfg.batch_size * cfg.batch_size
    _measure_step(measure, t, backend=f"{recipe}-{variant}", threads=None, reference=False, recipe=recipe,
                  images_per_epoch=images_per_epoch, epochs=cfg.epochs)
