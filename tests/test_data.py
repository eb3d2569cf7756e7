import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_perf.data import (MEAN, STD, Cifar10, DeviceLoader, input_size, load_cifar10, normalize, random_crop,
                               random_flip, read_batch, read_cache, split_train_val)
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


@pytest.mark.parametrize("damage", ["labels out of range", "wrong image shape", "wrong dtype", "label count"])
def test_readable_cache_with_invalid_contents_is_rebuilt(synthetic_cifar, tmp_path, damage):
    fresh, cache = _cached(synthetic_cifar, tmp_path)
    arrays = {k: v.copy() for k, v in vars(fresh).items()}
    if damage == "labels out of range":
        arrays["test_labels"][0] = 12
    elif damage == "wrong image shape":
        arrays["train_images"] = arrays["train_images"].reshape(-1, 32, 32, 3)
    elif damage == "wrong dtype":
        arrays["test_images"] = arrays["test_images"].astype(np.float32)
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


def test_normalize_standardises_and_is_channels_last():
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = normalize(images)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    expected = [(1 - m) / s for m, s in zip(MEAN, STD)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected))


def test_crop_shifts_with_zero_padding_and_flip_mirrors():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).view(2, 3, 32, 32)
    same = random_crop(images, torch.tensor([4, 4]), torch.tensor([4, 4]))
    assert torch.equal(same, images)
    shifted = random_crop(images, torch.tensor([0, 8]), torch.tensor([4, 4]))
    assert torch.equal(shifted[0, :, :, 4:], images[0, :, :, :28]) and (shifted[0, :, :, :4] == 0).all()
    assert torch.equal(shifted[1, :, :, :28], images[1, :, :, 4:]) and (shifted[1, :, :, 28:] == 0).all()
    flipped = random_flip(images, torch.tensor([True, False]))
    assert torch.equal(flipped[0], images[0].flip(2)) and torch.equal(flipped[1], images[1])


def _loader(n=100, **kwargs):
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)  # an id pixel that survives only without augmentation
    return DeviceLoader(images, torch.arange(n) % 10, batch_size=16, **kwargs), images


def test_train_epoch_is_a_permutation_with_drop_last_and_no_repeats():
    loader, images = _loader(train=True)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == 100 // 16
    ids = torch.cat([x[:, 0, 0, 0] for x, _ in batches])
    mean0, std0 = MEAN[0], STD[0]
    ids = torch.round((ids * std0 + mean0) * 255).long()
    assert len(set(ids.tolist())) == len(ids) == 96
    for x, y in batches:
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)


def test_eval_order_is_fixed_and_complete():
    loader, images = _loader(train=False)
    ys = torch.cat([y for _, y in loader])
    assert ys.tolist() == (torch.arange(100) % 10).tolist()


def test_shuffling_is_seeded_and_differs_between_epochs():
    a, _ = _loader(train=True, seed=3)
    b = DeviceLoader(a.images, a.labels, 16, train=True, seed=3)
    first = [y for _, y in a.epoch(0)]
    assert all(torch.equal(p, q) for p, q in zip(first, [y for _, y in b.epoch(0)]))
    assert not all(torch.equal(p, q) for p, q in zip(first, [y for _, y in a.epoch(1)]))


def test_augmentation_changes_images_but_keeps_labels():
    plain, images = _loader(train=True, seed=1)
    aug = DeviceLoader(plain.images, plain.labels, 16, train=True, augment=True, seed=1)
    changed = 0
    for (x0, y0), (x1, y1) in zip(plain.epoch(0), aug.epoch(0)):
        assert torch.equal(y0, y1)
        changed += int((x0 != x1).flatten(1).any(1).sum())
    assert changed > 80  # of 96: only the centre offset (1 of 81) without a flip leaves an image as it was


def test_resuming_an_epoch_mid_way_replays_the_same_batches():
    loader, _ = _loader(train=True, augment=True, seed=5)
    full = list(loader.epoch(2))
    tail = list(loader.epoch(2, start_batch=3))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[3:], tail))


def test_crop_of_a_smaller_size_is_a_window_of_the_padded_image():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).view(2, 3, 32, 32)
    crops = random_crop(images, torch.tensor([0, 8]), torch.tensor([3, 0]), pad=0, size=24)
    assert crops.shape == (2, 3, 24, 24)
    assert torch.equal(crops[0], images[0, :, 3:27, 0:24]) and torch.equal(crops[1], images[1, :, 0:24, 8:32])


def test_low_resolution_epochs_come_first_and_the_rest_are_full_size():
    assert [input_size(e, 3, 24) for e in range(5)] == [24, 24, 24, 32, 32]
    assert [input_size(e, 0, 16) for e in range(2)] == [32, 32]
    loader, images = _loader(train=True, seed=2, low_res_epochs=2, low_res_size=20)
    assert [loader.image_size(e) for e in range(4)] == [20, 20, 32, 32]
    for epoch, size in ((0, 20), (1, 20), (2, 32)):
        assert all(x.shape == (16, 3, size, size) for x, _ in loader.epoch(epoch))
    windows_loader = DeviceLoader(images, torch.arange(100), 16, train=True, low_res_epochs=1, low_res_size=20)
    x, y = next(iter(windows_loader.epoch(0)))  # without --augment: unpadded 20x20 windows of the images
    windows = normalize(images, channels_last=False).unfold(2, 20, 1).unfold(3, 20, 1)  # (n, 3, 13, 13, 20, 20)
    for crop, i in zip(x, y):
        assert (windows[i] == crop[:, None, None]).permute(1, 2, 0, 3, 4).flatten(2).all(2).any()



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


def test_loader_batches_make_no_tensor_from_host_data(monkeypatch):
    """On a GPU every tensor built from Python numbers is a blocking host-to-device copy: an epoch must not make
    any per batch (the normalisation constants are made once, with the loader)."""
    loader = DeviceLoader(np.zeros((64, 3, 32, 32), np.uint8), np.arange(64) % 10, 8, train=True, augment=True)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real(*a, **k))
    batches = list(loader.epoch(0))
    assert len(batches) == 8 and made == []
