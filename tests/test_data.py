import os
import pickle
import random
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from alexnet_perf.data import Cifar10, load_cifar10, read_batch, read_cache, split_train_val
from alexnet_perf.errors import UserError

from conftest import write_batch


def test_load_reads_the_official_layout_and_caches_it(synthetic_cifar, tmp_path):
    data = load_cifar10(str(synthetic_cifar), cache_dir=str(tmp_path / "cache"))
    assert data.train_images.shape == (5 * 64, 3, 32, 32) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (64, 3, 32, 32) and data.train_labels.dtype == np.int64
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 1
    again = load_cifar10(str(synthetic_cifar), cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(again.train_images, data.train_images)
    np.testing.assert_array_equal(again.test_labels, data.test_labels)


def test_test_only_load_reads_the_test_split_alone_and_leaves_the_whole_cache(synthetic_cifar, tmp_path,
                                                                               monkeypatch):
    """Scoring needs the test split only: from the cache, the training members are not read (they come back
    empty); without a cache, the batches are decoded and the whole cache written for later loads."""
    from alexnet_perf import data as data_module

    cache_dir = str(tmp_path / "cache")
    first = load_cifar10(str(synthetic_cifar), cache_dir=cache_dir, test_only=True)
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 1
    full = load_cifar10(str(synthetic_cifar), cache_dir=cache_dir)
    assert full.train_images.shape == (5 * 64, 3, 32, 32)
    read: list[str] = []
    real_read = data_module._read_array
    monkeypatch.setattr(data_module, "_read_array", lambda z, name: read.append(name) or real_read(z, name))
    again = load_cifar10(str(synthetic_cifar), cache_dir=cache_dir, test_only=True)
    assert sorted(read) == ["test_images", "test_labels"]
    for test_only in (first, again):
        assert test_only.train_images.shape == (0, 3, 32, 32) and test_only.train_images.dtype == np.uint8
        assert test_only.train_labels.shape == (0,) and test_only.train_labels.dtype == np.int64
        np.testing.assert_array_equal(test_only.test_images, full.test_images)
        np.testing.assert_array_equal(test_only.test_labels, full.test_labels)


def _cached(synthetic_cifar, tmp_path) -> tuple[Cifar10, Path]:
    """A fresh decode (its own cache folder) and the path of a second, separately written cache to damage."""
    fresh = load_cifar10(str(synthetic_cifar), cache_dir=str(tmp_path / "fresh"))
    load_cifar10(str(synthetic_cifar), cache_dir=str(tmp_path / "cache"))
    (cache,) = (tmp_path / "cache").glob("cifar10-*.npz")
    return fresh, cache


def _assert_same(a: Cifar10, b: Cifar10) -> None:
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == getattr(b, name).dtype


def _reload_and_check(synthetic_cifar, tmp_path, fresh: Cifar10, cache: Path) -> None:
    """Loading through the damaged cache returns the batches' data and leaves a good cache behind."""
    _assert_same(load_cifar10(str(synthetic_cifar), cache_dir=str(tmp_path / "cache")), fresh)
    repaired = read_cache(cache)
    assert repaired is not None
    _assert_same(repaired, fresh)


def test_truncated_cache_is_rebuilt_from_the_batches(synthetic_cifar, tmp_path):
    fresh, cache = _cached(synthetic_cifar, tmp_path)
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    _reload_and_check(synthetic_cifar, tmp_path, fresh, cache)


@pytest.mark.parametrize("where", [0.3, 0.5, 0.9, 0.999])
def test_cache_with_one_flipped_byte_is_rebuilt_from_the_batches(synthetic_cifar, tmp_path, where):
    fresh, cache = _cached(synthetic_cifar, tmp_path)
    raw = bytearray(cache.read_bytes())
    raw[int(where * (len(raw) - 1))] ^= 0x5A
    cache.write_bytes(bytes(raw))
    _reload_and_check(synthetic_cifar, tmp_path, fresh, cache)


@pytest.mark.parametrize("damage", ["labels out of range", "wrong image shape", "wrong dtype", "label count",
                                    "pickled objects"])
def test_readable_cache_with_invalid_contents_is_rebuilt(synthetic_cifar, tmp_path, damage):
    fresh, cache = _cached(synthetic_cifar, tmp_path)
    arrays = {k: v.copy() for k, v in vars(fresh).items()}
    if damage == "labels out of range":
        arrays["test_labels"][0] = 12
    elif damage == "wrong image shape":
        arrays["train_images"] = arrays["train_images"].reshape(-1, 32, 32, 3)
    elif damage == "wrong dtype":
        arrays["test_images"] = arrays["test_images"].astype(np.float32)
    elif damage == "pickled objects":  # never unpickled: the cache is rebuilt
        arrays["test_labels"] = arrays["test_labels"].astype(object)
    else:
        arrays["train_labels"] = arrays["train_labels"][:-1]
    with open(cache, "wb") as f:
        np.savez(f, **arrays)
    _reload_and_check(synthetic_cifar, tmp_path, fresh, cache)


def test_cifar10_root_is_used_when_no_data_dir_is_given(synthetic_cifar, monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_ROOT", str(synthetic_cifar))
    assert load_cifar10(cache_dir=str(tmp_path / "c")).test_images.shape[0] == 64


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_malicious_batch(tmp_path):
    path, marker = tmp_path / "data_batch_1", tmp_path / "payload-ran"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(UserError, match=r"refusing to load global (posix|os)\.system"):
        read_batch(path)
    assert not marker.exists()


def test_truncated_batch_is_a_clear_error(synthetic_cifar):
    path = synthetic_cifar / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="data_batch_2: not a readable CIFAR-10 batch"):
        read_batch(path)


@pytest.mark.parametrize("content", [
    b"\x80\x02\xff",  # an opcode pickle does not have
    b"\x80\x04](K\x01\x90.",  # ADDITEMS on a list: AttributeError
    b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 63 - 1),  # BINBYTES8 longer than any memory: Overflow/MemoryError
    b"\x80\x02Q",  # a persistent id, which a batch never holds
], ids=["unknown-opcode", "additems-on-list", "huge-length", "persistent-id"])
def test_a_damaged_batch_is_refused_in_one_line_whatever_the_unpickler_raises(tmp_path, content):
    (tmp_path / "data_batch_1").write_bytes(content)
    with pytest.raises(UserError, match="data_batch_1: not a readable CIFAR-10 batch") as refused:
        read_batch(tmp_path / "data_batch_1")
    assert "\n" not in str(refused.value)


def test_a_memo_index_named_by_a_damaged_byte_allocates_nothing(tmp_path):
    """A LONG_BINPUT naming memo slot 2**24 made the C unpickler allocate and clear a 268 MB memo array."""
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02}r" + struct.pack("<I", 2 ** 24) + b".")
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="not a CIFAR-10 batch"):
            read_batch(tmp_path / "data_batch_1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2 ** 20


def test_no_damaged_copy_of_a_batch_gets_past_the_reader_as_anything_but_one_line(tmp_path):
    """400 copies of a small batch, each cut to at most 200 bytes (no batch fits) and with a few bytes changed (a
    fixed seed): each is refused in one line and none raises anything else (the C unpickler let MemoryError,
    AttributeError and OverflowError through, and a damaged memo index could make it allocate gigabytes)."""
    write_batch(tmp_path / "good", np.arange(4 * 3072, dtype=np.uint8).reshape(4, 3, 32, 32), np.arange(4))
    good, rng, refused = (tmp_path / "good").read_bytes(), random.Random(0), 0
    for _ in range(400):
        damaged = bytearray(good[:rng.randint(1, 200)])
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        (tmp_path / "b").write_bytes(bytes(damaged))
        try:
            read_batch(tmp_path / "b")
        except UserError as e:
            assert "\n" not in str(e)
            refused += 1
    assert refused == 400


def test_wrong_shape_or_labels_are_refused(tmp_path):
    write_batch(tmp_path / "b", np.zeros((4, 3, 32, 32), np.uint8), np.array([0, 1, 2, 12]))
    with pytest.raises(UserError, match="labels"):
        read_batch(tmp_path / "b")
    with open(tmp_path / "c", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f, protocol=2)
    with pytest.raises(UserError, match=r"shape \(n, 3072\)"):
        read_batch(tmp_path / "c")


def test_missing_data_names_where_it_looked(tmp_path):
    with pytest.raises(UserError, match=f"looked for {tmp_path}"):
        load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "cache"))


def test_offline_download_fails_in_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(UserError) as err:
        load_cifar10(str(tmp_path / "nowhere"), download=True, cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert "\n" not in message and "downloading https://www.cs.toronto.edu" in message and "CIFAR10_ROOT" in message


def test_split_is_the_seeds_first_and_last_images():
    images, labels = np.arange(50).reshape(50, 1), np.arange(50)
    (tx, ty), (vx, vy) = split_train_val(images, labels, 10)
    assert ty.tolist() == list(range(40)) and vy.tolist() == list(range(40, 50))
    (tx, _), (vx, _) = split_train_val(images, labels, 0)
    assert len(tx) == 50 and len(vx) == 0
    with pytest.raises(UserError):
        split_train_val(images, labels, 50)


def test_fractional_labels_are_refused_not_truncated(tmp_path):
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.5, 2.0]}, f)
    with pytest.raises(UserError, match="'labels' must be 2 integers in 0..9"):
        read_batch(path)


def test_a_test_batch_shorter_than_the_training_batches_is_refused(synthetic_cifar, tmp_path):
    test_batch = synthetic_cifar / "cifar-10-batches-py" / "test_batch"
    write_batch(test_batch, np.zeros((63, 3, 32, 32), np.uint8), np.zeros(63, np.int64))  # one image cut off
    with pytest.raises(UserError, match="batches differ in size .*test_batch 63"):
        load_cifar10(str(synthetic_cifar), cache_dir=str(tmp_path / "cache"))
