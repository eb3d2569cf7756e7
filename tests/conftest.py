"""Shared fixtures: tiny synthetic CIFAR-10 batches in the official layout, and the real data when present."""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import pickle
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Iterator

import numpy as np
import pytest


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one batch exactly as the official python-version files are laid out (uint8 rows of 3072)."""
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"synthetic", b"labels": [int(v) for v in labels],
                     b"data": images.reshape(len(images), 3072), b"filenames": [b"x.png"] * len(images)}, f, protocol=2)


def make_synthetic_cifar(root: Path, per_batch: int = 64, seed: int = 0) -> Path:
    """A learnable fake CIFAR-10: each class has its own mean colour plus noise. Returns the data dir."""
    rng = np.random.default_rng(seed)
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    palette = rng.integers(30, 225, size=(10, 3))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, size=per_batch)
        noise = rng.normal(0, 25, size=(per_batch, 3, 32, 32))
        images = np.clip(palette[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
        write_batch(batches / name, images, labels)
    return root


class _FullDisk(io.RawIOBase):
    """A file that takes `room` bytes and then fails as a full disk does."""

    def __init__(self, fd: int, room: int) -> None:
        self.fd, self.room = fd, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return os.write(self.fd, data)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def full_disk(monkeypatch: pytest.MonkeyPatch, room: int = 1000) -> None:
    """Make every atomic write in this test hit a full disk after `room` bytes."""
    from alexnet_perf import atomic

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: io.BufferedWriter(_FullDisk(fd, room)))


@pytest.fixture
def synthetic_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synthetic data dir; the decode cache goes to a temporary folder so tests never touch .cache/."""
    monkeypatch.chdir(tmp_path)
    return make_synthetic_cifar(tmp_path / "cifar")


@pytest.fixture
def real_cifar_dir() -> Path:
    root = os.environ.get("CIFAR10_ROOT")
    if not root or not (Path(root) / "cifar-10-batches-py" / "test_batch").is_file():
        if os.environ.get("CI"):
            pytest.fail("CI must run the real-data tests, but CIFAR10_ROOT does not point at CIFAR-10")
        pytest.skip("real CIFAR-10 not available: set CIFAR10_ROOT (.ci/run does when ../shared/cifar10 exists)")
    return Path(root).resolve()


def openvino_lacks_bf16() -> bool:
    """Whether OpenVINO is importable but gets no BF16 from this CPU (no AVX-512 BF16 or AMX): it then refuses the
    openvino-bf16 backend, which would otherwise fall back to fp32 silently."""
    if importlib.util.find_spec("openvino") is None:
        return False
    import openvino

    return "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A checkpoint briefly trained on synthetic data and its four exported artifacts (no parity run), shared by
    the export, backend and parity tests; tests that alter files copy them first."""
    from alexnet_perf.export import ExportConfig, run_export
    from alexnet_perf.train import train
    from alexnet_perf.train_config import TrainConfig

    root = tmp_path_factory.mktemp("exported")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the CIFAR decode cache goes under root/.cache
        data_dir = make_synthetic_cifar(root / "cifar")
        checkpoint = root / "model.pth"
        # no identity init: after a few dozen steps its filters are still one-hot, and the small weights learned
        # beside the 1 vanish in 7-bit weights, so the int8 export would disagree with a model that learned little.
        # 8 epochs: after 3 (93.75 % of the 64 test images) bf16 and int8 flipped 1-2 images near the boundaries on
        # an AVX-512 CPU without AMX, each 1.6 pp of the 0.5 pp allowed; after 8 every image is far from them
        train(TrainConfig(epochs=8, batch_size=16, lr=0.05, val_size=64, data_dir=str(data_dir),
                          checkpoint=str(checkpoint), tensorboard=False, device="cpu", dirac_init=False))
        paths = run_export(ExportConfig(checkpoint=str(checkpoint), out=str(root / "exports"), data_dir=str(data_dir),
                                        calibration_images=128, parity=False))
    return SimpleNamespace(data_dir=data_dir, checkpoint=checkpoint, out=root / "exports", paths=paths)


def benchmark_script(name: str) -> Iterator[ModuleType]:
    """benchmarks/NAME.py imported as a module for the duration of a fixture (yield from it)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]
