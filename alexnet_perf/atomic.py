"""Atomic file writes: write to a temporary file beside the target, fsync, rename. An interrupted write
leaves the previous file intact."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import UserError


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(f) on a temporary binary file beside path, then rename it over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def check_writable_dir(folder: str | Path, what: str) -> None:
    """UserError unless folder is (or can be made) a directory that takes new files: checked by permissions and a
    probe file in it or its nearest existing parent, so that a bad output is found before long work, not after."""
    if str(folder) == "":
        raise UserError(f"{what} must name a folder, got an empty string")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{what} {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder}: {existing} is not writable")
    try:
        with tempfile.TemporaryFile(dir=existing):  # creates nothing that outlives the check
            pass
    except OSError as e:
        raise UserError(f"{what} {folder}: cannot write into {existing} ({e.strerror or e})") from None


def check_writable(path: str | Path, what: str) -> None:
    """UserError unless a file can be written atomically at path: a file path (not a folder, not empty) whose
    folder takes new files."""
    if str(path) == "":
        raise UserError(f"{what} must name a file, got an empty string")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file")
    check_writable_dir(path.parent, what)
