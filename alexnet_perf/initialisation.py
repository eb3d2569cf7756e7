"""Starting weights from Keller Jordan's airbench; the network itself is unchanged, only where it starts differs.

- Patch whitening: the first convolution's filters are set to the principal directions of the training images'
  patches, scaled by 1/sqrt(eigenvalue), each with its negative: the layer then starts out passing the image's
  information decorrelated and at unit scale, which is what it otherwise spends the first epochs learning.
- Identity filters: every later convolution starts with its first min(in, out) filters passing input channel i on
  to output channel i (a Dirac delta at the kernel's centre), the others drawn as PyTorch draws them: each block starts
  out close to passing on what the previous one found.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_covariance(images: torch.Tensor, kernel_size: int, chunk: int = 32) -> torch.Tensor:
    """(d, d) float64 covariance of the images' k×k patches (d = C·k·k, unfold's order), from chunk images at a
    time: all 5,000 images' patches at once are 1.2 GB, whose copies took over a second; a chunk's patches fit in
    cache. On the images' device."""
    d = images.shape[1] * kernel_size * kernel_size
    total = torch.zeros(d, dtype=torch.float64, device=images.device)
    products = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    for start in range(0, len(images), chunk):
        patches = F.unfold(images[start:start + chunk].float(), kernel_size)  # (n, d, positions)
        total += patches.sum((0, 2)).double()
        products += torch.bmm(patches, patches.transpose(1, 2)).sum(0).double()
    count = (images.shape[-2] - kernel_size + 1) * (images.shape[-1] - kernel_size + 1) * len(images)
    mean = total / count
    return products / count - torch.outer(mean, mean)


def patch_whitening_filters(images: torch.Tensor, kernel_size: int, out_channels: int,
                            eps: float = 5e-4) -> torch.Tensor:
    """(out_channels, C, k, k) filters: the top out_channels/2 whitening directions of the images' k×k patches and
    their negatives. images: normalised float (N, C, H, W)."""
    if out_channels % 2:
        raise ValueError("whitening filters come in ± pairs: out_channels must be even")
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_covariance(images, kernel_size))  # ascending
    top = eigenvectors[:, -(out_channels // 2):].flip(1).float()
    scale = (eigenvalues[-(out_channels // 2):].flip(0).float() + eps).rsqrt()
    filters = (top * scale).T.reshape(out_channels // 2, images.shape[1], kernel_size, kernel_size)
    return torch.cat([filters, -filters])


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor) -> None:
    """Set the model's first Conv2d to patch-whitening filters computed from images, bias 0."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    filters = patch_whitening_filters(images.to(conv.weight.device), conv.kernel_size[0], conv.out_channels)
    conv.weight.copy_(filters)
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def dirac_later_convs(model: nn.Module) -> None:
    """Set the first min(in, out) filters of every Conv2d after the first to identities of their input channels
    (torch.nn.init.dirac_); the other filters and the biases keep their values."""
    for conv in [m for m in model.modules() if isinstance(m, nn.Conv2d)][1:]:
        nn.init.dirac_(conv.weight[:conv.in_channels])
