"""Data-dependent initialisation: the first convolution starts as a patch-whitening filter bank.

Following Keller Jordan's airbench, the first layer's filters are set to the principal directions of the training
images' patches, scaled by 1/sqrt(eigenvalue), each with its negative: the layer then starts out passing the
image's information decorrelated and at unit scale, which is what it otherwise spends the first epochs learning.
The network itself is unchanged: only its starting weights differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_whitening_filters(images: torch.Tensor, kernel_size: int, out_channels: int,
                            eps: float = 5e-4) -> torch.Tensor:
    """(out_channels, C, k, k) filters: the top out_channels/2 whitening directions of the images' k×k patches and
    their negatives. images: normalised float (N, C, H, W)."""
    if out_channels % 2:
        raise ValueError("whitening filters come in ± pairs: out_channels must be even")
    c = images.shape[1]
    patches = F.unfold(images.float(), kernel_size).transpose(1, 2).reshape(-1, c * kernel_size * kernel_size)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())  # ascending
    top = eigenvectors[:, -(out_channels // 2):].flip(1).float()
    scale = (eigenvalues[-(out_channels // 2):].flip(0).float() + eps).rsqrt()
    filters = (top * scale).T.reshape(out_channels // 2, c, kernel_size, kernel_size)
    return torch.cat([filters, -filters])


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor) -> None:
    """Set the model's first Conv2d to patch-whitening filters computed from images, bias 0."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    filters = patch_whitening_filters(images.to(conv.weight.device), conv.kernel_size[0], conv.out_channels)
    conv.weight.copy_(filters)
    if conv.bias is not None:
        conv.bias.zero_()
