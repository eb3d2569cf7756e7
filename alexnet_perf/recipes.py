"""Named training recipes: plain dicts of TrainConfig fields. `seed` is the original run and the default.

fast: the least wall time to the seed's 83.18 % test accuracy on a 2-core CPU: 5 epochs, the first 2 on random
24×24 crops (≈0.55 of a full epoch's cost each), no dropout while training, BatchNorm biases at 4× the rate.
best: the highest test accuracy this network reaches within the budget stated in benchmarks/RESULTS.md (50 epochs,
4-px crops, cosine, with fast's dropout, batch-size and BatchNorm-bias changes). Neither compiles: on a CPU the
compiled step is only 3-5 % faster than eager, which a cold compile (≈ 15 s) does not repay in fast and turns
into about 1 % of best's run.
Both train on all 50,000 training images (val_size 0); they were tuned on the seed's 40k/10k split.
"""

RECIPES: dict[str, dict] = {
    "seed": {},
    "fast": dict(epochs=5, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, schedule="linear",
                 warmup_epochs=0.5, weight_decay=5e-4, decay_norm_and_bias=False, bn_bias_lr_scale=4.0,
                 dropout_scale=0.0, label_smoothing=0.1, clip_grad_norm=0.0, whiten_init=True, augment=True,
                 crop_padding=2, low_res_epochs=2, low_res_size=24, amp=True, val_size=0, tta=True),
    "best": dict(epochs=50, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, schedule="cosine",
                 warmup_epochs=1.0, weight_decay=5e-4, decay_norm_and_bias=False, bn_bias_lr_scale=4.0,
                 dropout_scale=0.0, label_smoothing=0.1, clip_grad_norm=0.0, whiten_init=True, augment=True,
                 crop_padding=4, amp=True, val_size=0, tta=True),
}
