"""alexnet_perf.whitening: the first convolution's patch-whitening initialisation."""

import torch

from alexnet_perf.whitening import patch_covariance, patch_whitening_filters


def test_whitening_filters_decorrelate_patches_to_unit_variance():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    images = torch.einsum("nchw,dc->ndhw", torch.randn(2000, 3, 8, 8), mix)  # correlated channels
    filters = patch_whitening_filters(images, kernel_size=3, out_channels=8)
    assert filters.shape == (8, 3, 3, 3)
    torch.testing.assert_close(filters[4:], -filters[:4])
    out = torch.nn.functional.conv2d(images, filters[:4]).permute(1, 0, 2, 3).reshape(4, -1)
    cov = torch.cov(out)
    torch.testing.assert_close(cov, torch.eye(4), atol=0.05, rtol=0.05)


def test_patch_covariance_equals_the_covariance_of_all_patches_at_once():
    torch.manual_seed(0)
    images = torch.randn(70, 3, 9, 9) * 2 + 1  # chunks of 32 leave a partial one; a mean far from 0
    patches = torch.nn.functional.unfold(images, 5).transpose(1, 2).reshape(-1, 75).double()
    torch.testing.assert_close(patch_covariance(images, 5), torch.cov(patches.T, correction=0), atol=1e-5, rtol=1e-5)


def test_patch_covariance_stays_on_the_images_device():
    """Training on a GPU whitens images already there: no accumulator may sit on the CPU (meta stands in here)."""
    assert patch_covariance(torch.empty(40, 3, 8, 8, device="meta"), 5).device.type == "meta"
