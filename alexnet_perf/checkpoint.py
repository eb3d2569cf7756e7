"""Checkpoints: their file format (training.Training.checkpoint fills it, Training.restore reads it back), and a
checkpoint to a network (evaluate, export, parity, predict). Written atomically, read weights-only, checked to be
ours (format, CRCs, architecture, finite weights) before any weight is used."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .atomic import write_atomic
from .data import CLASSES
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
    checkpoint whose bytes changed after it was written is refused instead of loading altered weights. Any other
    file is refused before torch.load sees it: its pre-zip reader fails on arbitrary bytes in ways it never names
    (a text file ends in a KeyError)."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable checkpoint (not the zip archive that torch.save writes)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        problem = None if bad is None else f"record {bad} fails its CRC-32 check"
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        problem = f"broken zip structure: {str(e)[:200]}"
    if problem:
        raise UserError(f"{path}: checkpoint is damaged or was modified after it was written ({problem})")


def _load_failure(error: Exception) -> str:
    """Why torch.load refused a file, without PyTorch's advice to retry with weights_only=False (which would run
    whatever code an untrusted file carries)."""
    text = str(error).strip()
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return (f"it holds a Python object of type {unsupported[1]}, which a checkpoint never does; it was refused "
                f"unread, since loading it would run code from the file")
    if "weights only load failed" in text.lower():
        return "it holds Python objects other than tensors and plain containers; it was refused unread"
    return f"{type(error).__name__}: {text.splitlines()[0] if text else 'no detail'}"[:200]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; a missing, corrupt, tampered or foreign file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (train one with `python -m alexnet_perf.train`)")
    verify_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's weights-only unpickler raises KeyError and others on damaged data
        raise UserError(f"{path}: not a readable checkpoint ({_load_failure(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not an alexnet_perf checkpoint (expected format {FORMAT!r})")
    return ckpt


def check_classes(ckpt: dict[str, Any], source: str | Path) -> None:
    """UserError unless the checkpoint is for CIFAR-10's classes in their order: a network for another class count
    would otherwise be exported, scored or used to label pictures with the wrong names."""
    count, classes = ckpt.get("num_classes", len(CLASSES)), ckpt.get("classes", list(CLASSES))
    if isinstance(count, bool) or not isinstance(count, int) or count != len(CLASSES):
        raise UserError(f"{source}: the network predicts {count!r} classes, CIFAR-10 has {len(CLASSES)}; "
                        f"train one with `python -m alexnet_perf.train`")
    if not isinstance(classes, (list, tuple)) or list(classes) != list(CLASSES):
        raise UserError(f"{source}: its classes {str(classes)[:120]} are not CIFAR-10's {list(CLASSES)}")


def model_from_checkpoint(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> AlexNetCifar:
    """Build the network and load its weights strictly; another architecture, or a network for another set of
    classes than CIFAR-10's, is refused by name. Every command that loads a checkpoint comes through here."""
    check_classes(ckpt, source)
    model = AlexNetCifar(num_classes=len(CLASSES))
    state = ckpt.get("model_state_dict")
    if not isinstance(state, dict):
        raise UserError(f"{source}: checkpoint holds no model_state_dict")
    expected = model.state_dict()
    wrong = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)]
    extra = [k for k in state if k not in expected]
    if wrong or extra:
        raise UserError(f"{source}: weights do not fit AlexNetCifar ({len(wrong)} missing or misshapen, "
                        f"{len(extra)} unexpected; first: {(wrong + extra)[0]})")
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise UserError(f"{source}: checkpoint holds non-finite (NaN or infinite) weights")
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
