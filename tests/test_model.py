import torch
import torch.nn.functional as F
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


def _reference_forward(model: AlexNetCifar, x: torch.Tensor) -> torch.Tensor:
    """The seed's network in eval mode written out with torch.nn.functional, reading the model's weights by name."""
    w = model.state_dict()
    h = x
    for conv, padding, pool in ((0, 2, True), (4, 2, True), (8, 1, False), (12, 1, False), (16, 1, True)):
        bn = f"features.{conv + 1}"
        h = F.conv2d(h, w[f"features.{conv}.weight"], w[f"features.{conv}.bias"], padding=padding)
        h = F.batch_norm(h, w[f"{bn}.running_mean"], w[f"{bn}.running_var"], w[f"{bn}.weight"], w[f"{bn}.bias"])
        h = F.relu(h)
        if pool:
            h = F.max_pool2d(h, 2)
    return F.linear(h.mean((2, 3)), w["classifier.2.weight"], w["classifier.2.bias"])


def test_forward_is_the_seeds_network_with_one_logit_per_class_and_image():
    torch.manual_seed(0)
    model = AlexNetCifar().eval()
    with torch.no_grad():  # BatchNorm statistics and affine parameters away from identity, so that each one counts
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        x = torch.randn(3, 3, 32, 32)
        out = model(x)
        assert out.shape == (3, 10)
        torch.testing.assert_close(out, _reference_forward(model, x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(x[1:2]), out[1:2], rtol=1e-4, atol=1e-5)  # each image's logits are its own
        assert not torch.allclose(out[0], out[1])


def test_flops_per_sample_are_twice_the_hand_counted_multiply_adds():
    """Each convolution at its output resolution and the classifier, 2 FLOPs a multiply-add; a training step adds
    the weight gradients of every layer and the input gradients of all but the first (the images need none)."""
    convs = [(3, 32, 5, 32), (32, 64, 5, 16), (64, 128, 3, 8), (128, 128, 3, 8), (128, 96, 3, 8)]
    layers = [2 * c_in * c_out * k * k * side * side for c_in, c_out, k, side in convs] + [2 * 96 * 10]
    flops = flops_per_sample()
    assert flops["inference"] == sum(layers)
    assert flops["training"] == 3 * sum(layers) - layers[0]
