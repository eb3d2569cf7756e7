"""Training throughput: images/s of one training step of the `fast` recipe (next batch from the device-resident
loader with its augmentation, forward, loss, backward, SGD update), per configuration and batch size.

The step is train.py's own train_step; only the model, optimizer and loader are set up here, as train() does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from alexnet_perf.data import DeviceLoader
from alexnet_perf.model import AlexNetCifar
from alexnet_perf.runtime import amp_dtype, synchronize
from alexnet_perf.train import parameter_groups, recipe_config, train_step

RECIPE = "fast"
BATCH_SIZES = (128, 512)
LOADER_BATCHES = 4  # the loader holds this many batches of images and cycles through epochs of them
PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class TrainSpec:
    compile: bool
    amp: bool
    channels_last: bool

    @property
    def id(self) -> str:
        return ("compiled" if self.compile else "eager") + ("-amp" if self.amp else "-fp32") + \
            ("-channels-last" if self.channels_last else "")

    def label(self, precision: torch.dtype | None) -> str:
        """The id with autocast's pick on this device (bf16, or fp16 on GPUs without bf16) in place of amp."""
        return self.id.replace("-amp", "-" + PRECISION_NAMES[precision])


SPECS = {spec.id: spec for spec in [
    TrainSpec(compile=False, amp=False, channels_last=False),
    TrainSpec(compile=False, amp=True, channels_last=True),
    TrainSpec(compile=True, amp=True, channels_last=True),
]}


def _forever(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for epoch in itertools.count():
        yield from loader.epoch(epoch)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("config_id", SPECS)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_training_step(measure, make_images, device: str, config_id: str, batch_size: int) -> None:
    spec = SPECS[config_id]
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA GPU here")
    dev = torch.device(device)
    cfg = recipe_config(RECIPE, batch_size=batch_size, amp=spec.amp, channels_last=spec.channels_last,
                        compile=spec.compile, device=device)
    torch.compiler.reset()
    torch.manual_seed(0)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = AlexNetCifar().to(dev, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias), lr=cfg.lr,
                                momentum=cfg.momentum, nesterov=cfg.nesterov)
    precision = amp_dtype(dev, cfg.amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    images = make_images(LOADER_BATCHES * batch_size)
    labels = np.arange(len(images)) % 10
    loader = DeviceLoader(images, labels, batch_size, dev, train=True, augment=cfg.augment, seed=cfg.seed,
                          channels_last=cfg.channels_last, crop_padding=cfg.crop_padding)
    batches = _forever(loader)
    net = torch.compile(model) if cfg.compile else model

    def step() -> None:
        x, y = next(batches)
        train_step(net, optimizer, scaler, criterion, x, y, precision, cfg.clip_grad_norm)
        synchronize(dev)

    measure(step, kind="training", batch_size=batch_size, backend=spec.label(precision), device=dev,
            dtype=str(precision or torch.float32).removeprefix("torch."),
            threads=torch.get_num_threads() if dev.type == "cpu" else None)
