"""alexnet_perf.initialisation: the first convolution's patch whitening, the later ones' identity filters."""

import torch
from torch import nn

from alexnet_perf.initialisation import dirac_later_convs, patch_covariance, patch_whitening_filters
from alexnet_perf.model import AlexNetCifar


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


def test_identity_filters_pass_each_later_convolutions_first_input_channels_on_unchanged():
    torch.manual_seed(0)
    model = AlexNetCifar().to(memory_format=torch.channels_last)  # training's layout: the weights are not contiguous
    before = [m.weight.clone() for m in model.modules() if isinstance(m, nn.Conv2d)]
    dirac_later_convs(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    torch.testing.assert_close(convs[0].weight, before[0], rtol=0, atol=0)  # the first is whitening's
    for conv, old in list(zip(convs, before))[1:]:
        n = min(conv.in_channels, conv.out_channels)
        x = torch.randn(2, conv.in_channels, 8, 8)
        out = nn.functional.conv2d(x, conv.weight, padding=conv.padding)
        torch.testing.assert_close(out[:, :n], x[:, :n])
        torch.testing.assert_close(conv.weight[n:], old[n:], rtol=0, atol=0)  # the other filters keep their draws
