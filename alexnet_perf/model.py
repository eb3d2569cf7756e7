"""The seed's network, layer for layer: 387,690 parameters for 10 classes."""

import torch
from torch import nn

NUM_PARAMS_10_CLASSES = 387_690


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class AlexNetCifar(nn.Module):
    """Five conv-BN-ReLU blocks, global average pooling and one linear layer (the seed's exact architecture)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(3, 32, 5), nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64, 5), nn.MaxPool2d(2),
            *_conv_bn_relu(64, 128, 3), nn.Dropout2d(0.1),
            *_conv_bn_relu(128, 128, 3), nn.Dropout2d(0.1),
            *_conv_bn_relu(128, 96, 3), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(96, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_sample() -> dict[str, float]:
    """Convolution and matmul FLOPs of one sample, as torch.utils.flop_counter counts them: a forward pass
    ("inference") and a training step's forward and backward ("training"). The benchmark suite and the step
    profiler both report rates against these counts, so they are counted here once."""
    from torch.utils.flop_counter import FlopCounterMode

    model, n = AlexNetCifar(), 4
    x, y = torch.zeros(n, 3, 32, 32), torch.zeros(n, dtype=torch.int64)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model.eval()(x)
    with FlopCounterMode(display=False) as training:
        nn.functional.cross_entropy(model.train()(x), y).backward()
    return {"inference": forward.get_total_flops() / n, "training": training.get_total_flops() / n}
