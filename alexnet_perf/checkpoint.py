"""Checkpoints: written atomically, read weights-only, checked to be ours before any weight is loaded."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .atomic import write_atomic
from .errors import UserError
from .model import AlexNetCifar

FORMAT = "alexnet_perf/checkpoint-v1"
DEFAULT_CHECKPOINT = ".cache/models/alexnet_cifar.pth"  # train writes it, evaluate/export/parity read it


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a crash never leaves a half-written checkpoint."""
    write_atomic(path, lambda f: torch.save(obj, f))


def last_path(best_path: str | Path) -> Path:
    """The last-epoch checkpoint lives beside the best one: model.pth → model.last.pth."""
    p = Path(best_path)
    return p.with_name(p.stem + ".last" + p.suffix)


def verify_archive(path: Path) -> None:
    """torch.save writes a zip whose records carry CRC-32s that torch.load never checks: check them, so that a
    checkpoint whose bytes changed after it was written is refused instead of loading altered weights."""
    if not zipfile.is_zipfile(path):
        return  # no zip directory at all: torch.load below says what is wrong with the file
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        problem = None if bad is None else f"record {bad} fails its CRC-32 check"
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        problem = f"broken zip structure: {str(e)[:200]}"
    if problem:
        raise UserError(f"{path}: checkpoint is damaged or was modified after it was written ({problem})")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; a missing, corrupt, tampered or foreign file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (train one with `python -m alexnet_perf.train`)")
    verify_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not an alexnet_perf checkpoint (expected format {FORMAT!r})")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> AlexNetCifar:
    """Build the network and load its weights strictly; another architecture is refused by name."""
    model = AlexNetCifar(num_classes=int(ckpt.get("num_classes", 10)))
    state = ckpt.get("model_state_dict")
    if not isinstance(state, dict):
        raise UserError(f"{source}: checkpoint holds no model_state_dict")
    expected = model.state_dict()
    wrong = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)]
    extra = [k for k in state if k not in expected]
    if wrong or extra:
        raise UserError(f"{source}: weights do not fit AlexNetCifar ({len(wrong)} missing or misshapen, "
                        f"{len(extra)} unexpected; first: {(wrong + extra)[0]})")
    model.load_state_dict(state)
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AlexNetCifar, dict[str, Any]]:
    ckpt = load_checkpoint(path, map_location)
    return model_from_checkpoint(ckpt, path), ckpt


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
