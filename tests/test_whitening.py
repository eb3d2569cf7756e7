"""alexnet_perf.whitening: the first convolution's patch-whitening initialisation."""

import torch

from alexnet_perf.whitening import patch_whitening_filters


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
