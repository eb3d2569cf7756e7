"""Classify your own pictures: `python -m alexnet_perf.predict IMAGE... [--backend NAME]`.

Each file is turned into the network's 32×32 input the way a photo viewer would show it, shrunk:

1. decoded with Pillow (PNG, JPEG and anything else Pillow reads; the first frame of an animation), turned upright
   by its EXIF orientation tag, as phones store portrait photos;
2. made RGB: grayscale becomes three equal channels, transparent pixels are laid over white;
3. centre-cropped to a square on its shorter side, so nothing is stretched (CIFAR-10's objects are centred);
4. resized to 32×32 by area averaging (Pillow's BOX filter: each output pixel is the mean of the pixels it
   covers, no aliasing and no ringing) or, for pictures smaller than 32 px, by bicubic enlargement;
5. scaled and standardised exactly as in training (data.normalize).

Every file is read and checked before any model is loaded, so a file that is missing or is not an image ends the
command at once with one line naming it. All images go through the backend as one batch; the latency printed is
that call alone, timed after one warm-up call on the same batch.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from . import flags
from .atomic import write_text_atomic
from .backend_base import WARMUP_CALLS, Backend
from .backends import REFERENCE, backend_spec, backend_specs, create_backend
from .checkpoint import DEFAULT_CHECKPOINT, load_model
from .data import CLASSES
from .device import synchronize
from .errors import UserError
from .loader import normalize

PROG = "python -m alexnet_perf.predict"
INPUT_SIZE = 32
TOP_K = 3
DEFAULT_BACKEND = REFERENCE["cpu"]  # eager fp32: the checkpoint's network as trained
DEFAULT_EXPORTS = "exports"
BACKGROUND = (255, 255, 255)  # what transparent pixels become
MAX_PIXELS = 50_000_000  # a larger picture is refused before decoding: 50 MP already take 150 MB as RGB
PREPROCESSING = ("Each picture is turned upright by its EXIF tag, made RGB (grayscale: three equal channels; "
                 "transparent pixels: white), centre-cropped to a square on its shorter side and area-averaged to "
                 "32x32 (bicubic when smaller), then standardised as in training.")
DESCRIPTION = ("Classify image files with the CIFAR-10 network through any backend: top-3 classes with "
               "probabilities per file, and the latency. " + PREPROCESSING)


# --- pictures → the network's input --------------------------------------------------------------------------

def center_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The (left, upper, right, lower) box of the largest centred square: crops rather than stretches."""
    side = min(width, height)
    left, upper = (width - side) // 2, (height - side) // 2
    return left, upper, left + side, upper + side


def resize_to_input(image: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """The centre square of image at size×size: area-averaged when shrinking, bicubic when enlarging."""
    box = center_square(*image.size)
    shrinking = box[2] - box[0] >= size
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return image.resize((size, size), resample, box=box)


def to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits: Pillow's own conversion would clip it to white. Pillow reads it as an
    I;16 mode, or (older releases, such as the floor's 10.0) as the 32-bit integer mode I holding the 16-bit values."""
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    pixels = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray((pixels / 257).round().astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as displayed: EXIF orientation applied, gray as three equal channels, transparency over white."""
    image = to_8_bit(ImageOps.exif_transpose(image))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


def image_to_array(image: Image.Image) -> np.ndarray:
    """A decoded picture → uint8 (3, 32, 32), channels first like the training data."""
    return np.asarray(resize_to_input(to_rgb(image)), dtype=np.uint8).transpose(2, 0, 1).copy()


def read_image(path: str | Path) -> np.ndarray:
    """One image file → uint8 (3, 32, 32); a missing, unreadable or non-image file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'is a directory, not an image' if path.is_dir() else 'no such file'}")
    try:
        # Pillow's warnings are not the user's: metadata it skipped (corrupt EXIF, TIFF tags past the end; damaged
        # pixels still fail load() below, in one line) and sizes from 89 MP on (MAX_PIXELS refuses those in one line)
        with warnings.catch_warnings(action="ignore"), Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise UserError(f"{path}: {width}x{height} pixels ({width * height / 1e6:.0f} megapixels) is more "
                                f"than the {MAX_PIXELS / 1e6:.0f} decoded safely; shrink it first")
            image.load()
            return image_to_array(image)
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (Pillow cannot read it; use PNG or JPEG)") from None
    except Image.DecompressionBombError as e:
        raise UserError(f"{path}: image too large to decode safely ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data, unreadable file
        raise UserError(f"{path}: damaged or unreadable image ({str(e).strip()[:200] or type(e).__name__})") from None


def read_images(paths: Sequence[str | Path]) -> np.ndarray:
    """All files → uint8 (N, 3, 32, 32); every bad file is named in one UserError, so one run finds them all."""
    if not paths:
        raise UserError("no image given: name one or more image files")
    arrays, problems = [], []
    for path in paths:
        try:
            arrays.append(read_image(path))
        except UserError as e:
            problems.append(str(e))
    if problems:
        raise UserError("; ".join(problems))
    return np.stack(arrays)


# --- inference -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    """One file's class probabilities (softmax of the logits, in CLASSES order)."""

    file: str
    probabilities: tuple[float, ...]

    def top(self, k: int = TOP_K) -> list[tuple[str, float]]:
        """The k most probable (class name, probability), most probable first."""
        order = sorted(range(len(self.probabilities)), key=lambda i: -self.probabilities[i])
        return [(CLASSES[i], self.probabilities[i]) for i in order[:k]]


@dataclass(frozen=True)
class PredictResult:
    """Predictions of one batch and the time of the backend call that made them."""

    backend: str
    device: str
    predictions: list[Prediction]
    seconds: float

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / len(self.predictions)


def timed_logits(backend: Backend, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """backend(x) and the seconds it took, after WARMUP_CALLS untimed calls (compilation, first-run set-up,
    CUDA-graph recording)."""
    for _ in range(WARMUP_CALLS):
        backend(x)
    synchronize(backend.device)
    start = time.perf_counter()
    logits = backend(x)
    synchronize(backend.device)
    return logits, time.perf_counter() - start


def classify(backend: Backend, images: np.ndarray, files: Sequence[str]) -> PredictResult:
    """uint8 (N, 3, 32, 32) images → each one's class probabilities under backend, with the call's latency."""
    x = normalize(torch.from_numpy(images), channels_last=False).to(backend.device)
    logits, seconds = timed_logits(backend, x)
    if logits.ndim != 2 or logits.shape[1] != len(CLASSES):
        raise UserError(f"{backend.name} returns logits of shape {tuple(logits.shape)}, not (N, {len(CLASSES)}): "
                        f"its model is not a CIFAR-10 network of this project")
    probabilities = torch.softmax(logits.float().cpu(), dim=1).tolist()
    predictions = [Prediction(str(f), tuple(p)) for f, p in zip(files, probabilities)]
    return PredictResult(backend.name, str(backend.device), predictions, seconds)


# --- the command ---------------------------------------------------------------------------------------------

def backend_names() -> list[str]:
    """Every registered backend's name, for --backend's choices."""
    return [spec.name for spec in backend_specs()]


@dataclass
class PredictConfig:
    images: tuple[str, ...] = flags.option(
        (), "image files (PNG, JPEG, ...; any size: centre-cropped to a square, area-averaged to 32×32)",
        positional=True, nargs="*", metavar="IMAGE")  # none given: read_images says so in one line
    backend: str = flags.option(DEFAULT_BACKEND, f"inference backend: {', '.join(backend_names())}",
                              choices=backend_names())
    checkpoint: str = flags.option(DEFAULT_CHECKPOINT, "checkpoint that the PyTorch backends run (the ones that load "
                                                       "an exported file do not need it)")
    exports: str = flags.option(DEFAULT_EXPORTS, "folder of exported artifacts (python -m alexnet_perf.export)")
    json: str | None = flags.option(None, "also write the predictions and latency to this JSON file")


def model_for(backend: str, checkpoint: str | Path) -> nn.Module | None:
    """The checkpoint's network for a backend that runs it; None for one that loads an exported artifact, so that
    those work without the checkpoint."""
    if backend_spec(backend).artifact is not None:
        return None
    model, _ = load_model(checkpoint)
    return model


def run_predict(cfg: PredictConfig) -> PredictResult:
    """Read every image first (a bad file fails before any model is loaded), then classify them with the backend."""
    images = read_images(cfg.images)
    backend = create_backend(cfg.backend, model_for(cfg.backend, cfg.checkpoint), cfg.exports)
    return classify(backend, images, cfg.images)


def format_result(result: PredictResult) -> str:
    """One line per file with its top-3 classes, then the backend, batch and latency."""
    lines = [f"{p.file}: " + ", ".join(f"{name} {100 * prob:.1f}%" for name, prob in p.top())
             for p in result.predictions]
    n = len(result.predictions)
    lines.append(f"{result.backend} on {result.device}: {n} image{'s' * (n != 1)} in one batch, "
                 f"{1000 * result.seconds:.2f} ms ({result.ms_per_image:.3f} ms/image)")
    return "\n".join(lines)


def result_json(result: PredictResult) -> dict[str, Any]:
    """The result as plain JSON data: each file's top-3 and all probabilities, and the latency."""
    return {"backend": result.backend, "device": result.device, "batch_size": len(result.predictions),
            "latency_ms": 1000 * result.seconds, "ms_per_image": result.ms_per_image,
            "predictions": [{"file": p.file, "top": [{"class": c, "probability": v} for c, v in p.top()],
                             "probabilities": dict(zip(CLASSES, p.probabilities))} for p in result.predictions]}


def main(cfg: PredictConfig) -> int:
    result = run_predict(cfg)
    print(format_result(result))
    if cfg.json:
        write_text_atomic(cfg.json, json.dumps(result_json(result), indent=2))
        print(f"wrote {cfg.json}")
    return 0


if __name__ == "__main__":
    flags.exit_with(flags.run(PredictConfig, main, PROG, DESCRIPTION))
