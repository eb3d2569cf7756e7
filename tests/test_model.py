import torch
from torch import nn

from alexnet_perf.model import NUM_PARAMS_10_CLASSES, AlexNetCifar, count_parameters, flops_per_sample


def test_parameter_count_matches_the_seed():
    assert count_parameters(AlexNetCifar()) == NUM_PARAMS_10_CLASSES == 387_690


def test_num_classes_changes_only_the_last_layer():
    assert count_parameters(AlexNetCifar(num_classes=100)) == 387_690 - 970 + 96 * 100 + 100


def test_layer_sequence_is_the_seeds():
    model = AlexNetCifar()
    described = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            described.append(f"Conv({m.in_channels}->{m.out_channels},k{m.kernel_size[0]},p{m.padding[0]})")
        elif isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.Flatten, nn.AdaptiveAvgPool2d)):
            described.append(type(m).__name__)
        elif isinstance(m, nn.MaxPool2d):
            described.append(f"MaxPool{m.kernel_size}")
        elif isinstance(m, (nn.Dropout2d, nn.Dropout)):
            described.append(f"{type(m).__name__}({m.p})")
        elif isinstance(m, nn.Linear):
            described.append(f"Linear({m.in_features}->{m.out_features})")
    block = ["BatchNorm2d", "ReLU"]
    assert described == [
        "Conv(3->32,k5,p2)", *block, "MaxPool2",
        "Conv(32->64,k5,p2)", *block, "MaxPool2",
        "Conv(64->128,k3,p1)", *block, "Dropout2d(0.1)",
        "Conv(128->128,k3,p1)", *block, "Dropout2d(0.1)",
        "Conv(128->96,k3,p1)", *block, "MaxPool2",
        "AdaptiveAvgPool2d", "Flatten", "Dropout(0.5)", "Linear(96->10)",
    ]


def test_forward_gives_one_logit_per_class():
    out = AlexNetCifar().eval()(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10)


def test_flops_per_sample_are_twice_the_hand_counted_multiply_adds():
    """Each convolution at its output resolution and the classifier, 2 FLOPs a multiply-add; a training step adds
    the weight gradients of every layer and the input gradients of all but the first (the images need none)."""
    convs = [(3, 32, 5, 32), (32, 64, 5, 16), (64, 128, 3, 8), (128, 128, 3, 8), (128, 96, 3, 8)]
    layers = [2 * c_in * c_out * k * k * side * side for c_in, c_out, k, side in convs] + [2 * 96 * 10]
    flops = flops_per_sample()
    assert flops["inference"] == sum(layers)
    assert flops["training"] == 3 * sum(layers) - layers[0]
