"""The seed's network, layer for layer: 387,690 parameters for 10 classes."""

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
