"""alexnet_perf: train a small AlexNet-style CNN on CIFAR-10 fast, export it with proven parity, measure it."""

__version__ = "0.1.0"
