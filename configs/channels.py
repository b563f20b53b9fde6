"""Two-axis channel information and FLOPs-matched channel pruning (Safaai et al., Sec. 2-4, App. C).

    python -m experiments.channels --config configs/channels.py --workdir runs/channels      # digits
    python -m experiments.channels --config configs/channels.py:smoke --workdir /tmp/ch      # ~1 CPU-min
    python -m experiments.channels --config configs/channels.py:cifar100 --workdir runs/c100  # GPU

Presets:
  default   scikit-learn digits (8x8, offline) with reduced-width ResNet-18 (widths 16-32-64-128,
            [2,2,2,2] blocks), VGG-16-BN (width 1/8) and MobileNetV2 (width 1/4, 128 final
            channels); 3 seeds; 15 training epochs; every pruning method at the paper's 10
            sparsities with a 20-batch recovery fine-tune; on the first seed, the CPU latency of
            every point's shrunk network at batch 1 and 256 (median of 10). 15 minutes on 2 idle
            CPU cores without latency (900 s measured; MobileNetV2 takes half of it); latency
            compiles two programs for each of the 390 points (`--config.latency.enabled=False` skips it).
  smoke     the whole pipeline on shortened tiny versions of the three families, 1 seed,
            3 sparsities, 2 methods per family.
  cifar100  the paper's protocol: CIFAR-100, ResNet-18 / VGG-16-BN / MobileNetV2 at full width, SGD
            momentum 0.9, weight decay 5e-4, 200 epochs, cosine schedule, lr 0.1 (0.05 for
            MobileNetV2), batch 128, crop+flip augmentation, seeds 42/123/456/789/1011, 5000-image
            calibration subset of the training split, recovery SGD (lr 0.01, momentum 0.9,
            wd 1e-4) for min(5 epochs, 200 batches). The batch size is not stated in the paper;
            128 is the usual CIFAR value.

The schema is the one of every experiment (`redundax.train.config_schema`): `data.name`,
`data.data_dir`, `data.batch_size` (base training and recovery fine-tunes), `train.epochs` /
`train.steps`, `optim.*` (`redundax.train.optim.build`; an architecture's `lr` overrides `optim.lr`),
`prune.optim.*` (the recovery fine-tunes), `eval.batch_size`, `checkpoint.every_steps`,
`run.log_every` / `run.progress`; an old field name (`dataset`, `train.batch_size`, `prune.lr`,
`eval_batch_size`, ...) is an error naming its successor. `run`, `checkpoint` and `data.data_dir` may
change when a run is resumed; every other field must match.
"""

from __future__ import annotations

from ml_collections import ConfigDict, config_dict

ALL_METHODS = (
    "magnitude",
    "taylor",
    "random",
    "fpgm",
    "bn_scale",
    "act_rms",
    "ix",
    "composite_ix",
    "local_rx",
    "local_compact",
    "task_mi",
    "composite_pid",
    "pid_no_red",
)
SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _arch(name: str, lr: float, **kw) -> ConfigDict:
    return ConfigDict({"name": name, "lr": lr, **kw})


def get_config(arg: str | None = None) -> ConfigDict:
    c = ConfigDict()
    c.data = ConfigDict()
    c.data.name = "sklearn_digits"
    c.data.data_dir = config_dict.placeholder(str)  # None: $REDUNDAX_DATA_DIR, the TFDS default
    c.data.batch_size = 64  # global, base training and recovery fine-tunes
    c.data.augment = False
    # `lr` of an architecture overrides optim.lr for its base training
    c.archs = [
        _arch("resnet18", 0.1, widths=(16, 32, 64, 128), blocks=(2, 2, 2, 2), width=1.0),
        _arch("vgg16", 0.05, width=0.125),
        _arch("mobilenetv2", 0.05, width=0.25, last_channels=128),
    ]
    c.seeds = (42, 123, 456)

    c.train = ConfigDict()
    c.train.epochs = 15
    c.train.steps = config_dict.placeholder(int)  # set: this many steps instead of epochs

    # base training (`redundax.train.optim.build`): L2 weight decay on the gradient, SGD with
    # momentum, cosine decay over the run
    c.optim = ConfigDict()
    c.optim.name = "sgd"
    c.optim.lr = 0.1
    c.optim.momentum = 0.9
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "cosine"

    c.eval = ConfigDict()
    c.eval.batch_size = 512  # global

    c.calib = ConfigDict()
    c.calib.size = 512
    c.calib.seed = 0
    c.calib.batch_size = 256

    c.metrics = ConfigDict()
    c.metrics.m = 10
    c.metrics.hull_eps = 0.05
    c.metrics.hull_cap = 10
    c.metrics.hull_pool = 0  # 0 -> all peers
    c.metrics.triplet_top = 24
    c.metrics.max_triplets = 1500
    c.metrics.top_fraction = 0.1
    c.metrics.kmeans_k = 3
    c.metrics.n_perm = 200

    c.lesion = ConfigDict()
    c.lesion.layers = 3  # depth-spaced non-depthwise units per model
    c.lesion.channels = 12  # sampled channels per unit
    c.lesion.peers = 8
    c.lesion.threshold = 1e-3  # nontrivial lesion: loss increase above this

    c.prune = ConfigDict()
    c.prune.methods = ALL_METHODS
    c.prune.sparsities = SPARSITIES
    c.prune.finetune_batches = 20
    c.prune.finetune_epochs = 5
    c.prune.min_keep = 1
    c.prune.taylor_batches = 4
    c.prune.alpha = 2.0
    c.prune.gamma = 0.25
    c.prune.n_boot = 10000
    # recovery fine-tune of every pruned network (App. C): SGD, lr 0.01, momentum 0.9, wd 1e-4
    c.prune.optim = ConfigDict()
    c.prune.optim.name = "sgd"
    c.prune.optim.lr = 0.01
    c.prune.optim.momentum = 0.9
    c.prune.optim.weight_decay = 1e-4
    c.prune.optim.schedule = "constant"

    # measured CPU latency of every pruning curve point's physically shrunk network
    c.latency = ConfigDict()
    c.latency.enabled = True
    c.latency.batch_sizes = (1, 256)  # batch 1 and a large batch
    c.latency.repeats = 10  # timed calls per network; the median is reported
    c.latency.min_seconds = 1.0  # and more, until each batch size's round-robin took this long
    c.latency.warmup = 1
    c.latency.all_seeds = False  # False: the first seed only (compiles 2 programs per point)

    c.checkpoint = ConfigDict()
    c.checkpoint.every_steps = 500  # base training and recovery fine-tunes (and at their ends)

    c.run = ConfigDict()
    c.run.log_every = 50
    c.run.progress = config_dict.placeholder(bool)  # None: a bar when stdout is a terminal
    if arg in (None, "", "default"):
        return c
    if arg == "smoke":
        # shortened stand-ins of the three families (fewer layers: fewer compilations)
        c.archs = [
            _arch("resnet18", 0.1, widths=(8, 16), blocks=(1, 1), width=1.0),
            _arch("vgg16", 0.05, width=1.0, cfg=(8, "M", 16, "M", 16)),
            _arch(
                "mobilenetv2",
                0.05,
                width=0.5,
                last_channels=32,
                settings=((1, 8, 1, 1), (6, 16, 2, 2)),
            ),
        ]
        c.seeds = (42,)
        c.train.epochs = 2
        c.calib.size = 128
        c.metrics.n_perm = 20
        c.metrics.max_triplets = 50
        c.lesion.layers = 1
        c.lesion.channels = 4
        c.prune.methods = ("magnitude", "random", "ix", "composite_ix", "task_mi", "composite_pid")
        c.prune.sparsities = (0.2, 0.5, 0.8)
        c.prune.finetune_batches = 2
        c.prune.taylor_batches = 1
        c.prune.n_boot = 200
        c.latency.batch_sizes = (1, 32)
        c.latency.repeats = 3
        c.latency.min_seconds = 0.0
        return c
    if arg == "cifar100":
        c.data.name = "cifar100"
        c.archs = [
            _arch("resnet18", 0.1, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), width=1.0),
            _arch("vgg16", 0.1, width=1.0),
            _arch("mobilenetv2", 0.05, width=1.0, last_channels=1280),
        ]
        c.seeds = (42, 123, 456, 789, 1011)
        c.train.epochs = 200
        c.data.batch_size = 128
        c.data.augment = True
        c.run.log_every = 200
        c.calib.size = 5000
        c.calib.batch_size = 250
        c.lesion.layers = 3
        c.lesion.channels = 20
        c.prune.finetune_batches = 200
        c.prune.taylor_batches = 20
        c.latency.repeats = 20
        return c
    raise ValueError(
        f"unknown preset {arg!r} for configs/channels.py; use default, smoke or cifar100."
    )
