"""alexnet_perf.loader: normalisation, the pixel-word gather (crop and flip), and the device loader's epochs."""

import numpy as np
import torch

from alexnet_perf.data import MEAN, STD
from alexnet_perf.loader import (DeviceLoader, cut_out, input_size, normalization_stats, normalize,
                                 normalize_words, pixel_words, window_indices)


def test_normalize_standardises_and_is_channels_last():
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = normalize(images)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    expected = [(1 - m) / s for m, s in zip(MEAN, STD)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected))


def _windows(images, pad, idx, dx, dy, size, flip=None, mode="zeros"):
    """window_indices gathered from pixel_words, back as uint8 (n, 3, size, size)."""
    words = pixel_words(images, pad, mode)
    at = window_indices(words, torch.tensor(idx), torch.tensor(dx), torch.tensor(dy), size,
                        None if flip is None else torch.tensor(flip))
    return words.view(-1)[at].view(torch.uint8).view(len(idx), size, size, 4)[..., :3].permute(0, 3, 1, 2)


def test_window_gather_crops_the_zero_padded_images_and_flip_mirrors():
    images = torch.randint(1, 256, (3, 3, 32, 32), dtype=torch.uint8)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    same = _windows(images, 4, [2, 0], [4, 4], [4, 4], 32)
    assert torch.equal(same, images[[2, 0]])
    shifted = _windows(images, 4, [0, 1], [0, 8], [4, 2], 32, flip=[False, True])
    assert torch.equal(shifted[0, :, :, 4:], images[0, :, :, :28]) and (shifted[0, :, :, :4] == 0).all()
    assert torch.equal(shifted[1], padded[1, :, 2:34, 8:40].flip(2))


def test_normalising_pixel_words_gives_normalize_s_values_bit_for_bit():
    images = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8)
    mean, std = (s.view(3).repeat(24 * 24) for s in normalization_stats("cpu"))
    for channels_last in (True, False):
        x = normalize_words(pixel_words(images), mean, std, channels_last)
        expected = normalize(images, channels_last)
        assert torch.equal(x, expected) and x.stride() == expected.stride()


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


def _mirrored(loader: DeviceLoader, images: torch.Tensor, epoch: int) -> dict[int, bool]:
    """Per image (the loader's labels are the images' indices), whether `epoch` served it mirrored."""
    plain = normalize(images)
    served = {}
    for x, y in loader.epoch(epoch):
        for crop, i in zip(x, y.tolist()):
            assert torch.equal(crop, plain[i].flip(2)) != torch.equal(crop, plain[i])
            served[i] = torch.equal(crop, plain[i].flip(2))
    return served


def test_alternating_flips_mirror_each_image_in_every_other_epoch():
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.arange(96), 16, train=True, augment=True, crop_padding=0, seed=4,
                          alternate_flips=True)
    first, second, third = (_mirrored(loader, images, e) for e in range(3))
    assert 30 < sum(first.values()) < 66  # a random half
    assert all(second[i] != first[i] for i in first) and third == first
    drawn = DeviceLoader(images, torch.arange(96), 16, train=True, augment=True, crop_padding=0, seed=4)
    assert _mirrored(drawn, images, 2) != _mirrored(drawn, images, 0)  # drawn anew each epoch otherwise


def test_resuming_an_epoch_mid_way_replays_the_same_batches():
    loader, _ = _loader(train=True, augment=True, seed=5)
    full = list(loader.epoch(2))
    tail = list(loader.epoch(2, start_batch=3))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[3:], tail))


def test_crop_of_a_smaller_size_is_a_window_of_the_padded_image():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    crops = _windows(images, 0, [0, 1], [0, 8], [3, 0], 24)
    assert crops.shape == (2, 3, 24, 24)
    assert torch.equal(crops[0], images[0, :, 3:27, 0:24]) and torch.equal(crops[1], images[1, :, 0:24, 8:32])


def test_the_loader_keeps_the_images_it_was_given():
    loader, images = _loader(train=True, augment=True, crop_padding=3)
    assert loader.images.shape == images.shape and torch.equal(loader.images, images)


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


def test_cut_out_zeroes_the_square_around_each_centre_clipped_at_the_border():
    x = torch.ones(3, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    out = cut_out(x, torch.tensor([4, 0, 7]), torch.tensor([3, 1, 7]), 4)
    assert out is x and x.is_contiguous(memory_format=torch.channels_last)
    expected = torch.ones(3, 3, 8, 8)
    expected[0, :, 2:6, 1:5] = 0  # side 4: two rows/columns before the centre, one after
    expected[1, :, 0:2, 0:3] = 0
    expected[2, :, 5:8, 5:8] = 0
    assert torch.equal(x, expected)


def test_cutout_blanks_one_square_per_training_image_and_leaves_the_rest_of_the_batch_as_it_was():
    plain, images = _loader(train=True, augment=True, seed=4)
    cut = DeviceLoader(plain.images, plain.labels, 16, train=True, augment=True, seed=4, cutout=6)
    for (x0, y0), (x1, y1) in zip(plain.epoch(1), cut.epoch(1)):
        assert torch.equal(y0, y1)
        changed = x0 != x1
        assert torch.equal(x1[changed], torch.zeros(int(changed.sum())))
        blanked = (x1 == 0).all(1)  # pixels where every channel is the mean (random pixels almost never are)
        assert ((blanked.sum((1, 2)) >= 9) & (blanked.sum((1, 2)) <= 36)).all()  # 6x6, clipped to at least 3x3
    evaluation = DeviceLoader(plain.images, plain.labels, 16, cutout=6)
    assert torch.equal(next(iter(evaluation))[0], normalize(images[:16]))


def test_loader_batches_make_no_tensor_from_host_data(monkeypatch):
    """On a GPU every tensor built from Python numbers is a blocking host-to-device copy: an epoch must not make
    any per batch (the normalisation constants are made once, with the loader)."""
    loader = DeviceLoader(np.zeros((64, 3, 32, 32), np.uint8), np.arange(64) % 10, 8, train=True, augment=True,
                          cutout=8)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real(*a, **k))
    batches = list(loader.epoch(0))
    assert len(batches) == 8 and made == []


def test_uncropped_epochs_serve_whole_images_with_the_flips_the_epoch_draws():
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    options = dict(train=True, augment=True, crop_padding=4, seed=3, alternate_flips=True)
    cropped = DeviceLoader(images, torch.arange(96), 16, **options)
    loader = DeviceLoader(images, torch.arange(96), 16, uncropped_from=2, **options)
    whole = _mirrored(loader, images, 2)  # fails unless every image comes whole, mirrored or not
    assert 30 < sum(whole.values()) < 66 and _mirrored(loader, images, 3) == {i: not m for i, m in whole.items()}
    for epoch in (1, 2):  # the same order and labels as the cropped epoch's; earlier epochs still cropped
        pairs = list(zip(cropped.epoch(epoch), loader.epoch(epoch)))
        assert all(torch.equal(a[1], b[1]) for a, b in pairs)
        assert all(torch.equal(a[0], b[0]) for a, b in pairs) == (epoch == 1)


def test_a_low_resolution_epoch_stays_cropped_when_uncropped_epochs_overlap_it():
    options = dict(train=True, augment=True, crop_padding=2, low_res_epochs=2, low_res_size=24, seed=6)
    loader, images = _loader(uncropped_from=1, **options)
    cropped = DeviceLoader(images, loader.labels, 16, **options)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(cropped.epoch(1), loader.epoch(1)))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(cropped.epoch(2), loader.epoch(2)))


def test_reflect_padding_mirrors_the_image_at_its_edges_as_torch_pads():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    expected = torch.nn.functional.pad(images.float(), (4, 4, 4, 4), mode="reflect").to(torch.uint8)
    assert torch.equal(_windows(images, 4, [0, 1, 2], [0, 0, 0], [0, 0, 0], 40, mode="reflect"), expected)
    loader = DeviceLoader(images, torch.arange(3), 3, train=True, augment=True, crop_padding=4, padding_mode="reflect")
    assert torch.equal(loader.images, images) and loader.words.shape == (3, 40, 40)
    assert (loader.words[:, 0] != 0).any()  # zero padding would leave the border rows 0


def test_after_the_first_epoch_a_hard_fraction_serves_the_highest_loss_images_in_random_order():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.arange(100) % 10, 10, train=True, seed=3, hard_fraction=0.45)
    assert [loader.batches(e) for e in range(3)] == [10, 4, 4] and loader.steps_before(3) == 18
    first = []
    for x, y in loader.epoch(0):
        first.append(loader.served.clone())
        loader.record((loader.served.float() * 7) % 100)  # a loss for each image that is no function of its order
    assert sorted(torch.cat(first).tolist()) == list(range(100))
    served = []
    for x, y in loader.epoch(1):
        assert torch.equal(y, loader.labels[loader.served])
        served.append(loader.served.clone())
    hardest = torch.topk((torch.arange(100).float() * 7) % 100, 45).indices
    kept = torch.cat(served)
    assert len(kept) == 40 and set(kept.tolist()) <= set(hardest.tolist())
    assert not torch.equal(kept, kept.sort().values)


def test_a_hard_fraction_keeps_at_least_one_batch():
    loader = DeviceLoader(torch.zeros(100, 3, 32, 32, dtype=torch.uint8), torch.zeros(100), 10, train=True,
                          hard_fraction=0.05)
    assert [loader.kept(e) for e in range(3)] == [100, 10, 10] and loader.batches(1) == 1
