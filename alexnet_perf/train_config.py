"""The training configuration: every option of `python -m alexnet_perf.train` in one dataclass, with named recipes
(recipes.py) resolved here, and which options describe how a run executes rather than what it computes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from . import flags
from .checkpoint import DEFAULT_CHECKPOINT
from .data import DATA_DIR_HELP
from .errors import UserError
from .loader import PADDING_MODES
from .recipes import DEFAULT_RECIPE, RECIPES

SCHEDULES = ("cosine-epoch", "cosine", "linear")


@dataclass(init=False)
class TrainConfig:
    """Every training option. TrainConfig(recipe=NAME, **overrides): the original run's values (the defaults below),
    then the recipe's settings, then the overrides; checked against every option's range. The CLI builds it the same
    way from the flags given."""

    recipe: str = flags.option(DEFAULT_RECIPE, "named recipe whose settings become the defaults (flags still "
                                             "override): fast = quickest to the original's 83.18% test accuracy "
                                             "(5 epochs: under 2 minutes on 2 cores of an AMD EPYC with AVX-512 "
                                             "BF16, more without native bf16), best = highest accuracy (50 "
                                             "epochs), original = the original 500-epoch run",
                             choices=sorted(RECIPES), preset=True)
    epochs: int = flags.option(500, "number of epochs", at_least=1)
    batch_size: int = flags.option(128, "training batch size (the last partial batch of an epoch is dropped)",
                                 at_least=1)
    lr: float = flags.option(0.075, "peak SGD learning rate", above=0)
    momentum: float = flags.option(0.9, "SGD momentum", at_least=0, below=1)
    nesterov: bool = flags.option(False, "Nesterov momentum")
    schedule: str = flags.option("cosine-epoch", "learning-rate schedule: cosine-epoch (the seed's CosineAnnealingLR, "
                                               "stepped per epoch), cosine or linear (per step, to 0)",
                               choices=SCHEDULES)
    warmup_epochs: float = flags.option(0.0, "linear warm-up from 0 over this many epochs (per-step schedules)",
                                      at_least=0)
    weight_decay: float = flags.option(2e-3, "SGD weight decay (L2)", at_least=0)
    decay_norm_and_bias: bool = flags.option(True, "apply weight decay to BatchNorm weights and biases too (the seed)")
    bn_momentum: float = flags.option(0.1, "BatchNorm running-statistics momentum", above=0, at_most=1)
    whiten_init: bool = flags.option(False, "initialise the first convolution as a patch-whitening filter bank "
                                          "computed from 5,000 training images (airbench's trick)")
    dirac_init: bool = flags.option(False, "start every later convolution with its first min(in, out) filters passing "
                                         "their input channels on unchanged (identity filters, airbench's trick)")
    bn_bias_lr_scale: float = flags.option(1.0, "learning-rate multiplier of the BatchNorm biases", above=0)
    ema: float = flags.option(0.0, "keep an exponential moving average of the weights with this per-step decay and "
                                 "validate/save it (0: off)", at_least=0, below=1)
    lookahead: bool = flags.option(False, "airbench's lookahead: every 5 steps pull the weights back into a slow "
                                        "copy, averaging more as the run ends (decay 0.95^5 * progress^3); the run "
                                        "ends on the slow weights")
    dropout_scale: float = flags.option(1.0, "multiply the network's dropout rates by this while training (0: no "
                                           "dropout; inference never drops)", at_least=0, at_most=1)
    label_smoothing: float = flags.option(0.1, "label smoothing of the cross-entropy loss", at_least=0, below=1)
    clip_grad_norm: float = flags.option(1.0, "clip the gradient's global L2 norm to this (0: no clipping)",
                                       at_least=0)
    augment: bool = flags.option(False, "random crop (zero padding) + horizontal flip, batched on the device")
    alternate_flips: bool = flags.option(False, "with --augment, mirror a random half of the images in even epochs "
                                              "and the other half in odd ones (airbench), instead of drawing anew")
    crop_padding: int = flags.option(4, "padding of the random crop with --augment, in pixels", at_least=0,
                                   at_most=16)
    crop_padding_mode: str = flags.option("zeros", "what fills the crop's padding: zeros (black) or reflect (the "
                                                 "image mirrored at its edges, as airbench pads)",
                                        choices=PADDING_MODES)
    cutout: int = flags.option(0, "cutout: set a square of this side, at a random centre of each training image and "
                                  "clipped at its border, to the mean pixel (0: off)", at_least=0, at_most=32)
    uncropped_epochs: int = flags.option(0, "with --augment, train the last N epochs (those at full size) on whole "
                                          "images, flipped but not cropped: the network ends on images framed as "
                                          "the ones it is scored on", at_least=0)
    low_res_epochs: int = flags.option(0, "train the first N epochs on random --low-res-size crops (cheaper per "
                                        "image; validation and test stay 32x32)", at_least=0)
    low_res_size: int = flags.option(24, "input size of the first --low-res-epochs epochs, in pixels", at_least=8,
                                   at_most=32)
    hard_fraction: float = flags.option(1.0, "after the first epoch, train each epoch on this fraction of the "
                                           "training images: those whose loss was highest when last trained on "
                                           "(selective backprop; per-step schedules span the shorter epochs)",
                                      above=0, at_most=1)
    freeze_first_block_from: int = flags.option(0, "from this epoch on (1: from the start), stop training the first "
                                                 "convolution and its BatchNorm: the backward pass then ends at the "
                                                 "second convolution's weights, skipping its input gradient and "
                                                 "every pass over the largest activations (0: train them to the "
                                                 "end)", at_least=0)
    tta: bool = flags.option(False, "score this recipe with flip test-time augmentation (mean logits of image and "
                                  "mirror image): validation uses it, and the closing test report and evaluate "
                                  "show it beside the plain figure (recorded in the checkpoint)")
    val_size: int = flags.option(10_000, "last N training images held out for validation (0: train on all 50,000)",
                               at_least=0)
    limit_train: int = flags.option(0, "train on only the first N training images, for quick runs (0: all)",
                                  at_least=0)
    device: str = flags.option("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    compile: bool = flags.option(False, "torch.compile the network (forward and backward) for training")
    amp: bool = flags.option(False, "mixed precision: bf16 autocast on CPU/modern GPUs, fp16 + GradScaler otherwise")
    tf32: bool = flags.option(False, "on GPUs, let the fp32 convolutions and matmuls (all of them without --amp) run "
                                   "in TF32: faster, with a 10-bit mantissa; off, fp32 means fp32")
    channels_last: bool = flags.option(True, "channels-last memory layout for the network and its inputs")
    reuse_freed_memory: bool = flags.option(True, "on a CPU, keep freed memory in the process for the next step "
                                                "instead of returning it to the kernel (glibc): large tensors stop "
                                                "faulting in fresh pages every step; the process keeps its peak "
                                                "memory until it exits")
    seed: int = flags.option(0, "seed for initialisation, shuffling, augmentation and dropout", at_least=0)
    deterministic: bool = flags.option(False, "use deterministic algorithms only (slower on GPU)")
    data_dir: str | None = flags.option(None, DATA_DIR_HELP)
    download: bool = flags.option(False, "download CIFAR-10 if it is missing")
    checkpoint: str = flags.option(DEFAULT_CHECKPOINT, "best-validation checkpoint path; the last-epoch one is "
                                                     "written beside it (*.last.pth)")
    resume: bool = flags.option(False, "continue the run saved in the last checkpoint (its configuration is kept)")
    overwrite: bool = flags.option(False, "start a new run even though --checkpoint (or its .last.pth) exists, "
                                        "replacing that earlier run's checkpoints")
    tensorboard: bool = flags.option(True, "log to TensorBoard under --log-dir")
    log_dir: str = flags.option(".cache/tensorboard/training/alexnet", "TensorBoard folder; each run gets run_<time>")
    log_every: int = flags.option(20, "update the progress bar and batch-wise TensorBoard scalars every N steps",
                                at_least=1)

    def __init__(self, recipe: str = DEFAULT_RECIPE, **overrides: Any) -> None:
        if recipe not in RECIPES:
            raise UserError(f"unknown recipe {recipe!r}; choose from {', '.join(sorted(RECIPES))}")
        values = {f.name: f.default for f in fields(TrainConfig) if f.name != "recipe"}
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise TypeError(f"TrainConfig has no option {unknown[0]!r}")
        self.recipe = recipe
        for name, value in {**values, **RECIPES[recipe], **overrides}.items():
            setattr(self, name, value)
        flags.validate(self)
        if self.hard_fraction < 1 and self.schedule == "cosine-epoch":
            raise UserError("--hard-fraction below 1 needs a per-step --schedule (cosine or linear): cosine-epoch "
                            "steps at epoch ends, and the shorter epochs would move them")


# Settings that change how a run executes but not what it computes: --resume may change them.
RUNTIME_FIELDS = ("device", "compile", "data_dir", "download", "checkpoint", "resume", "overwrite", "tensorboard",
                  "log_dir", "log_every")


def given_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings of cfg that differ from what its recipe gives (and the recipe, unless it is the default one):
    what the user chose, as opposed to defaults. Runtime settings are left out."""
    defaults = TrainConfig(cfg.recipe)
    chosen = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)
              if f.name not in RUNTIME_FIELDS and getattr(cfg, f.name) != getattr(defaults, f.name)}
    if cfg.recipe != DEFAULT_RECIPE:
        chosen["recipe"] = cfg.recipe
    return chosen
