"""CIFAR-10: read the official python-version batches safely (a restricted unpickler), cache them as one checked
.npz, and split them as the seed did; loader.py serves them in batches from the training device."""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .errors import UserError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel mean of the 50,000 training images, pixels scaled to [0, 1]
STD = (0.2470, 0.2435, 0.2616)
DEFAULT_DATA_DIR = ".cache/base_datasets/cifar10"
DEFAULT_CACHE_DIR = ".cache/data"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
DATA_DIR_HELP = f"folder holding {BATCHES}/ (default: $CIFAR10_ROOT or {DEFAULT_DATA_DIR})"


def preprocessing() -> dict:
    """The network's input, exactly (what normalize computes): recorded in checkpoints and every exported file."""
    return {"layout": "NCHW", "shape": ["N", 3, 32, 32], "dtype": "float32", "channels": "RGB",
            "scale": 1 / 255, "mean": list(MEAN), "std": list(STD),
            "formula": "x[n, c] = (pixels_uint8[n, c] * scale - mean[c]) / std[c]", "in_graph": False}


@dataclass
class Cifar10:
    """The decoded data set: images uint8 (N, 3, 32, 32), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


# --- reading -------------------------------------------------------------------------------------------------

def _numpy_reconstruct():
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy has no multiarray._reconstruct")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle._Unpickler):
    """Admits only what a CIFAR batch holds (a numpy uint8 array, builtins); any other global is refused unrun.
    Python's own unpickler, not the C one: as fast on a batch (one 30 MB string is most of it), and its memo is a
    dict, where the C unpickler sizes a memo array to the largest index a file names, so that one damaged byte in a
    1 KB file could have it allocate and clear gigabytes."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise _RefusedGlobal(f"refusing to load global {module}.{name}: not part of a CIFAR-10 batch")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (images uint8 (n, 3, 32, 32), labels int64 (n,)), validated."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise UserError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - whatever damaged bytes make the unpickler raise, the file is unreadable
        detail = " ".join(str(e).split()) or "no detail"
        raise UserError(f"{path}: not a readable CIFAR-10 batch (truncated or wrong file: {type(e).__name__}: "
                        f"{detail[:200]})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{path}: 'data' must be a uint8 array of shape (n, 3072), got "
                        f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}")
    if labels.dtype.kind not in "iu" or labels.shape != (data.shape[0],) or labels.size and (
            labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise UserError(f"{path}: 'labels' must be {data.shape[0]} integers in 0..9 (got {labels.dtype} "
                        f"{labels.shape})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def resolve_data_dir(data_dir: str | None) -> Path:
    """--data-dir if given, else $CIFAR10_ROOT, else the default cache location."""
    return Path(data_dir or os.environ.get("CIFAR10_ROOT") or DEFAULT_DATA_DIR)


def _batches_dir(root: Path) -> Path | None:
    for candidate in (root / BATCHES, root):
        if (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    return None


def download_cifar10(root: Path) -> None:
    """Fetch and unpack the official archive into root, checking its md5."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(ARCHIVE_URL, download_root=str(root), md5=ARCHIVE_MD5)
    except Exception as e:  # network, md5 or disk failure: all mean "no data", say why in one line
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"CIFAR-10 not found in {root} and downloading {ARCHIVE_URL} failed ({reason}). Put the python-version "
            f"batches ({BATCHES}/) there, or point --data-dir or CIFAR10_ROOT at a folder that holds them."
        ) from None


def _cache_key(files: list[Path]) -> str:
    h = hashlib.sha1()
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def load_cifar10(data_dir: str | None = None, download: bool = False, cache_dir: str = DEFAULT_CACHE_DIR,
                test_only: bool = False) -> Cifar10:
    """Load CIFAR-10, decoding the pickles once into an .npz cache under cache_dir that later starts reuse.
    test_only: read only the test split from the cache (the training split comes back empty): scoring a model reads
    30 MB instead of 180.

    Downloads when asked to, or when the default location is used and empty; otherwise a missing data set is a
    one-line UserError naming where it was looked for.
    """
    root = resolve_data_dir(data_dir)
    batches = _batches_dir(root)
    if batches is None:
        if download or str(root) == DEFAULT_DATA_DIR:
            download_cifar10(root)
            batches = _batches_dir(root)
        if batches is None:
            raise UserError(f"CIFAR-10 not found: looked for {root / BATCHES / TRAIN_FILES[0]}. Pass --data-dir (or "
                            f"set CIFAR10_ROOT) to a folder holding {BATCHES}/, or add --download.")
    files = [batches / name for name in (*TRAIN_FILES, TEST_FILE)]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise UserError(f"CIFAR-10 in {batches} is incomplete: missing {', '.join(missing)}")
    cache = Path(cache_dir) / f"cifar10-{_cache_key(files)}.npz"
    data = read_cache(cache, test_only)
    if data is None:
        data = decode_batches(files)
        _write_cache(cache, data)
        if test_only:
            data = _test_split(data.test_images, data.test_labels)
    return data


def decode_batches(files: list[Path]) -> Cifar10:
    """The five training batches and the test batch (in that order) decoded into one Cifar10."""
    train = [read_batch(p) for p in files[:-1]]
    test_images, test_labels = read_batch(files[-1])
    sizes = {len(x) for x, _ in train} | {len(test_images)}
    if len(sizes) != 1:  # the official batches hold 10,000 images each: a shorter one was cut or replaced
        counts = ", ".join(f"{p.name} {len(x)}" for p, x in zip(files, [x for x, _ in train] + [test_images]))
        raise UserError(f"CIFAR-10 batches differ in size ({counts}): one is truncated or from another set; "
                        f"restore the official files")
    return Cifar10(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_images,
                   test_labels)


def read_cache(path: Path, test_only: bool = False) -> Cifar10 | None:
    """The cached arrays, or None when path is missing, unreadable (truncated, a flipped byte fails the zip's
    CRC-32) or holds anything but a valid data set: the caller then rebuilds it from the batches. test_only: the
    training split is not read, and comes back empty."""
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as z:
            test = [_read_array(z, k) for k in ("test_images", "test_labels")]
            data = (_test_split(*test) if test_only
                    else Cifar10(*(_read_array(z, k) for k in ("train_images", "train_labels")), *test))
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, KeyError, EOFError, NotImplementedError):
        return None
    return data if _is_valid(data) else None


def _test_split(test_images: np.ndarray, test_labels: np.ndarray) -> Cifar10:
    """The data set of a test-only load: the test split, and an empty training split of the same shapes and types."""
    return Cifar10(test_images[:0], test_labels[:0], test_images, test_labels)


def _read_array(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One array of an .npz file (its CRC-32 checked), in memory numpy did not allocate: numpy asks the kernel for
    huge pages for arrays of 4 MB and more, which on a machine short of free huge pages stalls in memory compaction
    (the training images: 1.3 s, against 0.1 s in ordinary pages)."""
    with archive.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{name}: .npy format {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{name}: object array")
        buffer = bytearray(f.read())
    return np.frombuffer(buffer, dtype).reshape(shape, order="F" if fortran_order else "C")


def _is_valid(data: Cifar10) -> bool:
    """Images uint8 (n, 3, 32, 32) with n int64 labels in 0..9, for both splits."""
    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, 32, 32):
            return False
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            return False
        if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            return False
    return True


def _write_cache(path: Path, data: Cifar10) -> None:
    """Replace the cache atomically; an unwritable cache only costs the next start the decoding time."""
    try:
        write_atomic(path, lambda f: np.savez(f, **vars(data)))
    except (OSError, UserError):
        pass


def random_images(n: int, seed: int = 0) -> np.ndarray:
    """n uint8 CIFAR-shaped images (N, 3, 32, 32) of uniformly random pixels, the same for the same seed: inputs
    where what matters is the cost (a network's does not depend on the pixels) or agreement beyond the test set."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def split_train_val(images: np.ndarray, labels: np.ndarray, val_size: int):
    """The seed's split: the first N - val_size images train, the last val_size validate (val_size 0: no val)."""
    if not 0 <= val_size < len(images):
        raise UserError(f"--val-size must be in 0..{len(images) - 1}, got {val_size}")
    cut = len(images) - val_size
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])
