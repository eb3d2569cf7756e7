"""Batches served from tensors on the training device: the whole split lives there as uint8 pixels; every epoch is a
device-side permutation, and augmentation (random crop of the image padded by `crop_padding` px on each side, with
zeros or by reflection, horizontal flip, cutout), normalisation and the channels-last layout are batched tensor ops
there. No CPU DataLoader, no worker processes."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .data import MEAN, STD
from .errors import UserError


def normalization_stats(device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD as (1, 3, 1, 1) float32 tensors on device. Made once per loader: built per batch on a GPU they
    were two blocking host-to-device copies every step, which kept the CPU from running ahead of the GPU."""
    return (torch.tensor(MEAN, device=device).view(1, 3, 1, 1), torch.tensor(STD, device=device).view(1, 3, 1, 1))


def normalize(images: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float32 scaled to [0, 1] and standardised with MEAN/STD (the model's input)."""
    mean, std = normalization_stats(images.device)
    x = (images.float() / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


PADDING_MODES = ("zeros", "reflect")


def reflected(length: int, pad: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Indices of a row of `length` padded by `pad` on each side by reflection at its ends, the end itself not
    repeated (torch's "reflect"): length 4, pad 2 gives 2 1 0 1 2 3 2 1."""
    i = torch.arange(-pad, length + pad, device=device).abs()
    return torch.where(i < length, i, 2 * (length - 1) - i)


def pixel_words(images: torch.Tensor, pad: int = 0, mode: str = "zeros") -> torch.Tensor:
    """(N, H + 2·pad, W + 2·pad) int32: each pixel of the uint8 (N, 3, H, W) images, padded by pad (with zeros, or
    mode "reflect": by reflection), as one 4-byte word holding its R, G and B bytes and a zero byte. A crop and flip
    then move whole pixels, one gathered word each, and the pixels come out in channels-last order."""
    if mode == "reflect" and pad:
        height, width = images.shape[-2:]
        images = images[:, :, reflected(height, pad, images.device)][..., reflected(width, pad, images.device)]
        pad = 0
    rgb0 = F.pad(images.permute(0, 2, 3, 1), (0, 1, pad, pad, pad, pad))
    return rgb0.contiguous().view(torch.int32).view(rgb0.shape[:3])


def window_indices(words: torch.Tensor, idx: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, size: int,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """(n, size, size) indices into words.view(-1) (pixel_words) of the size×size window of image idx[i] whose
    top-left pixel is at column dx[i], row dy[i], mirrored left to right where flip[i]: a batch's selection, crop
    and flip as one gather."""
    height, width = words.shape[1:]
    steps = torch.arange(size, device=words.device)
    cols = steps.expand(len(idx), size)
    if flip is not None:
        cols = torch.where(flip[:, None], steps.flip(0), cols)
    corner = idx * (height * width) + dy * width + dx
    return corner[:, None, None] + (steps * width)[None, :, None] + cols[:, None, :]


def normalize_words(words: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    channels_last: bool = True) -> torch.Tensor:
    """normalize() of a batch of pixel words (n, h, w), value for value: mean and std are MEAN and STD repeated
    for each of the h·w pixels (3·h·w values), so that every operation runs along whole rows of pixels."""
    n, h, w = words.shape
    x = words.view(torch.uint8).view(n, h, w, 4)[..., :3].float().view(n, -1)
    x = ((x / 255 - mean) / std).view(n, h, w, 3).permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


def cut_out(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, side: int) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017), in place: in each normalised image x[i] (n, C, H, W), the side×side square
    centred on pixel (rows[i], cols[i]) and clipped at the border is set to 0, the dataset's mean pixel."""
    height, width = x.shape[-2:]
    start = side // 2

    def inside(centres: torch.Tensor, length: int) -> torch.Tensor:
        offset = torch.arange(length, device=x.device) - (centres[:, None] - start)
        return (offset >= 0) & (offset < side)

    return x.masked_fill_((inside(rows, height)[:, :, None] & inside(cols, width)[:, None, :])[:, None], 0.0)


def input_size(epoch: int, low_res_epochs: int, low_res_size: int, full_size: int = 32) -> int:
    """Training input size of epoch (0-based): low_res_size in the first low_res_epochs epochs, then full_size."""
    return low_res_size if epoch < low_res_epochs else full_size


class DeviceLoader:
    """Batches of normalised images and labels from uint8 pixels resident on one device.

    train=True: a fresh permutation each epoch, drop_last (compiled graphs never see a new shape) and, with
    augment, random crop (of the image padded by crop_padding, padding_mode zeros or reflect) + flip; with
    alternate_flips each image's flip is drawn once and inverted every other epoch (airbench) instead of drawn anew.
    cutout > 0: cut_out a square of that side at a uniformly drawn centre of each training image. low_res_epochs > 0:
    the first epochs train on random low_res_size crops (cheaper per image; the network ends in global average
    pooling, so any input size works).
    uncropped_from: full-size epochs from this one (0-based) on serve whole images, flipped as above but not cropped.
    hard_fraction < 1: every epoch after the first serves only that fraction of the images, those whose loss was
    highest when last trained on (the loss of each image served is given back through record), in random order:
    easy images stop costing steps (selective backprop, with the losses the training already computes).
    All randomness of epoch e comes from a generator seeded with (seed, e) (alternating flips: their first draw, from
    one seeded with seed alone), so an epoch can be replayed, or resumed from any batch, exactly. train=False: fixed
    order, every sample once.
    The images are kept as pixel_words: a batch is one gather and four passes along contiguous rows, its values
    those of normalize() of the cropped and flipped uint8 images (then cut_out's squares), already channels-last.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, batch_size: int,
                 device: torch.device | str = "cpu", *, train: bool = False, augment: bool = False, seed: int = 0,
                 channels_last: bool = True, crop_padding: int = 4, low_res_epochs: int = 0,
                 low_res_size: int = 32, cutout: int = 0, alternate_flips: bool = False,
                 uncropped_from: int | None = None, padding_mode: str = "zeros", hard_fraction: float = 1.0) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be positive, got {batch_size}")
        if train and len(images) < batch_size:
            raise UserError(f"the training set ({len(images)} images) is smaller than one batch ({batch_size})")
        self.device = torch.device(device)
        self.pad = crop_padding if train and augment else 0
        if padding_mode not in PADDING_MODES:
            raise UserError(f"padding mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        self.words = pixel_words(torch.as_tensor(images).to(self.device, torch.uint8), self.pad, padding_mode)
        self.labels = torch.as_tensor(labels).to(self.device, torch.int64)
        self.batch_size, self.train, self.augment = batch_size, train, augment
        self.seed, self.channels_last = seed, channels_last
        self.low_res_epochs, self.low_res_size = low_res_epochs, low_res_size
        self.cutout = cutout if train else 0
        self.alternate_flips = alternate_flips
        self.uncropped_from = uncropped_from
        self.stats = normalization_stats(self.device)
        self.hard_fraction = hard_fraction if train else 1.0
        # each image's loss when last served (inf: not yet), and those losses as they were when the epoch began:
        # the epoch's selection, kept apart so that a run resumed inside an epoch selects the same images
        self.losses = torch.full((len(self.words),), float("inf"), device=self.device)
        self.ranking = self.losses.clone()
        self.served: torch.Tensor | None = None  # indices of the images of the last training batch

    @property
    def images(self) -> torch.Tensor:
        """The uint8 (N, 3, H, W) images: a view of the pixel words."""
        n, height, width = self.words.shape
        p = self.pad
        pixels = self.words.view(torch.uint8).view(n, height, width, 4)
        return pixels[:, p:height - p, p:width - p, :3].permute(0, 3, 1, 2)

    def __len__(self) -> int:
        n = len(self.words)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def kept(self, epoch: int) -> int:
        """How many images training epoch `epoch` serves: all in the first, hard_fraction of them (at least one
        batch: a training set holds one) after."""
        n = len(self.words)
        return n if epoch == 0 else max(round(self.hard_fraction * n), self.batch_size)

    def batches(self, epoch: int) -> int:
        """The number of batches of epoch `epoch` (len(self) unless hard_fraction < 1)."""
        return self.kept(epoch) // self.batch_size if self.train else len(self)

    def steps_before(self, epoch: int) -> int:
        """Training batches in the epochs before `epoch` (all of a run of N epochs: steps_before(N))."""
        return sum(self.batches(e) for e in range(epoch))

    def record(self, losses: torch.Tensor) -> None:
        """Note the per-image losses of the last training batch served, for the selection of later epochs."""
        self.losses[self.served] = losses.detach().float()

    def hardest(self, order: torch.Tensor, epoch: int, start_batch: int) -> torch.Tensor:
        """The images of order that epoch keeps (its highest-loss kept(epoch)), still in order's order. At the
        epoch's first batch the losses recorded so far become its ranking."""
        if start_batch == 0:
            self.ranking.copy_(self.losses)
        keep = torch.zeros(len(order), dtype=torch.bool, device=self.device)
        keep[torch.topk(self.ranking, self.kept(epoch), sorted=False).indices] = True
        return order[keep[order]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    @property
    def full_size(self) -> int:
        """The side of the stored images, without the crop padding."""
        return self.words.shape[-1] - 2 * self.pad

    def image_size(self, epoch: int) -> int:
        """The side of the images served in training epoch `epoch`."""
        return input_size(epoch, self.low_res_epochs, self.low_res_size, self.full_size)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = len(self.words), self.batch_size
        full = self.full_size
        size = self.image_size(epoch) if self.train else full
        crop = self.train and (self.augment or size < full)
        if self.train:
            g = torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g, device=self.device)
            if self.hard_fraction < 1 and epoch > 0:
                order = self.hardest(order, epoch, start_batch)
            if crop:
                offsets = torch.randint(0, self.words.shape[-1] - size + 1, (2, n), generator=g, device=self.device)
                if size == full and self.uncropped_from is not None and epoch >= self.uncropped_from:
                    offsets.fill_(self.pad)  # drawn all the same, so that the epoch's other draws do not change
            if self.augment and self.alternate_flips:
                first = torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + 999_983)
                flips = (torch.rand(n, generator=first, device=self.device) < 0.5) ^ bool(epoch % 2)
            elif self.augment:
                flips = torch.rand(n, generator=g, device=self.device) < 0.5
            if self.cutout:
                centres = torch.randint(0, size, (2, n), generator=g, device=self.device)
        mean, std = (s.view(3).repeat(size * size) for s in self.stats)
        for i in range(start_batch, self.batches(epoch)):
            if not self.train:
                words, y = self.words[i * bs:(i + 1) * bs], self.labels[i * bs:(i + 1) * bs]
            else:
                idx = self.served = order[i * bs:(i + 1) * bs]
                y = self.labels[idx]
                words = (self.words.view(-1)[window_indices(self.words, idx, offsets[0, idx], offsets[1, idx], size,
                                                            flips[idx] if self.augment else None)]
                         if crop else self.words[idx])
            x = normalize_words(words, mean, std, self.channels_last)
            if self.cutout:
                x = cut_out(x, centres[0, idx], centres[1, idx], self.cutout)
            yield x, y
