"""Atomic file writes and exclusive claims on outputs.

write_atomic writes to a temporary file that it creates itself, exclusively and under an unpredictable name, beside
the target (so a link planted in a shared folder is never followed), fsyncs it and renames it over the target: an
interrupted write leaves the previous file intact, and a write the machine refuses (full disk, quota, read-only
folder) is one UserError that says the previous file is unchanged. claim_output makes a run the only one writing an
output until it ends: a second run on the same checkpoint or export folder is refused instead of racing it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import UserError


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError that error is or was raised from (torch.save turns a failed write into a RuntimeError whose
    context is the OSError), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def write_failure(path: str | Path, error: OSError) -> UserError:
    """The one-line error for a write the machine refused."""
    reason = error.strerror or str(error) or type(error).__name__
    hint = " (free some space and rerun)" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return UserError(f"cannot write {path}: {reason}{hint}; the previous file, if any, is unchanged")


def is_special_file(path: Path) -> bool:
    """path is (or links to) a device, pipe or socket, such as /dev/null or a named pipe, or is a link to a process's
    descriptor, such as /dev/stdout (whatever file that writes to): the rename of an atomic write would replace it
    with a plain file (as root, /dev/null itself)."""
    try:
        if path.is_symlink() and os.readlink(path).startswith("/proc/"):
            return True
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(f) on a new temporary binary file beside path, then rename it over path. The temporary is created
    with O_EXCL under a random name (tempfile.mkstemp), so it can be neither a planted link nor another run's file;
    the rename replaces a link at path itself instead of writing through it. An OSError (disk full, read-only
    folder), also one torch wraps in a RuntimeError, becomes a UserError; nothing is left behind. A device, pipe,
    socket or descriptor link at path (is_special_file) is refused untouched."""
    path = Path(path)
    if is_special_file(path):
        raise UserError(f"cannot write {path}: it is a device, pipe, socket or descriptor link, not a file; "
                        "it is unchanged")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_failure(path, e) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        cause = os_error_in(e)
        if cause is None:
            raise
        raise write_failure(path, cause) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def lock_path(output: str | Path) -> Path:
    """The lock file of an output (a checkpoint or an export folder): .NAME.lock beside it, found through the
    resolved path so that every spelling of one output shares one lock."""
    output = Path(output).resolve()
    return output / ".lock" if not output.name else output.with_name(f".{output.name}.lock")


@contextlib.contextmanager
def claim_output(output: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on output for the duration of the block, or a UserError at once if another process
    holds it: of two runs started together on one output, exactly one proceeds. The lock is an flock on a small
    file beside the output, so the kernel releases it whenever the process ends, even by kill -9."""
    import fcntl

    lock = lock_path(output)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                     0o644)
    except OSError as e:
        raise UserError(f"{what} {output}: cannot create its lock file {lock} ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise UserError(f"{what} {output} is in use by another run ({who}); wait for it to end or write "
                            f"elsewhere") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


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
    if is_special_file(path):
        raise UserError(f"{what} {path} is a device, pipe, socket or descriptor link, not a file")
    check_writable_dir(path.parent, what)
