"""CNN image classification (`python -m experiments.classify --config configs/classify.py[:preset]`).

Presets:

- default (no preset): a small ResNet (widths 16-32-64, one basic block per stage) on the 8x8
  scikit-learn digits, 30 epochs of SGD with Nesterov momentum and a cosine schedule; offline,
  a few minutes on a CPU.
- `smoke`: the same pipeline, a tiny ResNet and 3 epochs; under a minute on one CPU (tests).
- `cifar10`, `cifar100`: CIFAR ResNet-18 (3x3 stem, no max-pool), batch 128, SGD momentum 0.9,
  weight decay 5e-4, learning rate 0.1 with cosine decay over 200 epochs, random crop (padding
  4) and horizontal flip (He et al., 2016, Sec. 4.2, with the cosine schedule now standard for
  CIFAR ResNet-18). Needs the CIFAR binary archives (see `redundax.data`).

The `monitor` section (on by default) measures the redundancy of every conv layer's outputs
(`redundax.monitor`: every spatial position a sample) on a fixed held-out set of test images every
`monitor.every_steps` steps and at the end, logged as `monitor/<layer>/<metric>`. At the default
cadence (6 epochs) the evaluations cost about 2% of the training time, plus a one-time compilation
of the first one (benchmarks/monitor.py).

The schema is the one of every experiment (`redundax.train.config_schema`): `data.name`,
`data.data_dir`, `data.batch_size`, `train.epochs` / `train.steps`, `optim.*`
(`redundax.train.optim.build`), `eval.*`, `checkpoint.*`, `run.*`; an old field name
(`num_epochs`, `data.dir`, `run.checkpoint_every`, ...) is an error naming its successor. The
`run`, `checkpoint` and `monitor` sections, `eval.every_epochs` and `data.data_dir` may change
when a run is resumed (`redundax.train.checkpoint.IGNORED_FIELDS`); every other field must match
the checkpoint's.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "sklearn_digits"
    # None: $REDUNDAX_DATA_DIR, else ~/tensorflow_datasets
    c.data.data_dir = config_dict.placeholder(str)
    c.data.batch_size = 64  # global, over all processes and devices
    c.data.augment = True  # digits: 1-pixel shifts; CIFAR: crop with padding 4 + flip

    c.model = ml_collections.ConfigDict()
    c.model.widths = (16, 32, 64)
    c.model.blocks = (1, 1, 1)

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 30
    c.train.steps = config_dict.placeholder(int)  # set: train this many steps instead

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"  # redundax.train.optim.build
    c.optim.schedule = "cosine"  # warm-up (warmup_epochs) then cosine decay
    c.optim.lr = 0.1  # peak learning rate
    c.optim.momentum = 0.9
    c.optim.nesterov = True
    c.optim.weight_decay = 5e-4  # L2 on every parameter, added to the gradient (PyTorch SGD)
    c.optim.warmup_epochs = 1
    c.optim.label_smoothing = 0.0
    c.optim.accumulate_steps = 1  # > 1: optax.MultiSteps over that many micro-batches
    # a NaN/Inf loss or gradient: False stops the run (exit 3), True skips that update
    c.optim.skip_nonfinite = False

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 512  # global
    c.eval.every_epochs = 5  # and at the end

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 200  # and on SIGTERM and at the end
    c.checkpoint.keep = 2

    c.run = ml_collections.ConfigDict()
    c.run.log_every = 20  # steps
    c.run.progress = config_dict.placeholder(bool)  # None: a bar when stdout is a terminal
    c.run.log_batches = False  # record batch fingerprints in batches.jsonl

    c.monitor = ml_collections.ConfigDict()
    c.monitor.enabled = True
    c.monitor.every_steps = 132  # 6 epochs of the digits preset: 5 evaluations
    c.monitor.num_examples = 256  # the first test images, measured at every evaluation
    c.monitor.batch_size = 256  # global
    c.monitor.where = r".*\.conv"  # regular expression on module paths: every nnx.Conv
    c.monitor.reduce = "flatten"  # every spatial position is a sample
    c.monitor.metrics = ("spectral_redundancy", "effective_rank", "rankme", "alpha_req")

    if arg is None or arg == "":
        return c
    if arg == "smoke":
        c.model.widths = (8, 16)
        c.model.blocks = (1, 1)
        c.train.epochs = 3
        c.optim.warmup_epochs = 0
        c.run.log_every = 5
        c.eval.every_epochs = 1
        c.checkpoint.every_steps = 20
        c.monitor.every_steps = 20
        c.monitor.num_examples = 64
        return c
    if arg in ("cifar10", "cifar100"):
        c.data.name = arg
        c.data.batch_size = 128
        c.model.widths = (64, 128, 256, 512)
        c.model.blocks = (2, 2, 2, 2)
        c.optim.nesterov = False
        c.optim.warmup_epochs = 0
        c.train.epochs = 200
        c.run.log_every = 100
        c.eval.every_epochs = 10
        c.checkpoint.every_steps = 1000
        c.monitor.every_steps = 3910  # 10 epochs
        c.monitor.num_examples = 1024
        return c
    raise ValueError(
        f"unknown preset {arg!r} for configs/classify.py; choose one of: (none), smoke, cifar10, "
        "cifar100."
    )
