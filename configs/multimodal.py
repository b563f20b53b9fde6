"""Multimodal balance: joint training, OGM-GE, RedReg and its ablations.

`python -m experiments.multimodal --config configs/multimodal.py[:preset] --workdir DIR`

Presets:

- default (no preset): the offline two-view digits (`redundax.data.multimodal`, the clean
  coarse view dominant by construction), MLP encoders, 30 epochs of SGD with momentum, every
  method with three seeds; a few minutes on a CPU.
- `smoke`: the same pipeline, four methods (every transform code path), one seed, 2 epochs;
  under a minute on a CPU.
- `cremad`, `kinetics_sounds`: the paper's protocol (Yang et al., 2025, and the code of its
  repository): ResNet-18 audio and visual encoders from scratch, concat fusion with unimodal
  heads, batch 64, SGD (momentum 0.9, weight decay 1e-4) at learning rate 2e-3 for 80 epochs,
  decayed x0.1 at epoch 40, the RedReg code's modality-dropout schedule, noise sigma 0.03.
  Reported accuracies of RedReg: 73.86% (CREMA-D) and 71.13% (Kinetics-Sounds). They need the
  preprocessed datasets on disk (see `redundax.data.multimodal`) and an accelerator.

Every method shares model, data order, loss (cross-entropy of the fused head plus
`loss.unimodal_weight` times those of the unimodal heads, as in the RedReg code) and optimizer;
only the gradient transformation placed before the optimizer differs.

The schema is the one of every experiment (`redundax.train.config_schema`): `data.name`,
`data.data_dir`, `data.batch_size`, `train.epochs`, `optim.*` (`redundax.train.optim.build`),
`eval.*`, `checkpoint.*`; an old field name (`num_epochs`, `data.dir`, ...) is an error naming
its successor. The `run` section may change when a run is resumed; every other field must match.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

ALL_METHODS = (
    "joint",
    "ogm_ge",
    "redreg",
    "redreg_no_monitor",
    "redreg_no_gate",
    "redreg_no_projection",
    "redreg_scale",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1, 2)
    c.methods = ",".join(ALL_METHODS)

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits_two_view"
    c.data.variant = config_dict.placeholder(str)  # cremad: "1fps" (default) or "3fps"
    c.data.data_dir = config_dict.placeholder(
        str
    )  # None: $REDUNDAX_DATA_DIR, ~/tensorflow_datasets
    c.data.batch_size = 64  # global, over all processes and devices
    c.data.augment = True  # digits: re-drawn occluded view; frames: random resized crop + flip

    c.model = ml_collections.ConfigDict()
    c.model.kind = "mlp"  # "mlp" or "resnet18"
    c.model.hidden = 64
    c.model.features = 32

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 30

    # `redundax.train.optim.build`: L2 weight decay added to the gradient, then SGD with momentum
    # (PyTorch order); the rate is multiplied by decay_factor at each of boundary_epochs.
    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"
    c.optim.lr = 0.05
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "piecewise"
    c.optim.boundary_epochs = (20,)
    c.optim.decay_factor = 0.1

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 360  # global

    c.loss = ml_collections.ConfigDict()
    c.loss.unimodal_weight = 1.0

    # Modality dropout of the RedReg code: probability p_start falling linearly to p_end over
    # the first warm_fraction of the epochs; at most one modality is dropped per step.
    c.modality_dropout = ml_collections.ConfigDict()
    c.modality_dropout.enabled = False
    c.modality_dropout.p_start = 0.6
    c.modality_dropout.p_end = 0.1
    c.modality_dropout.warm_fraction = 0.3

    c.redreg = ml_collections.ConfigDict()
    c.redreg.window = 10
    c.redreg.ema_decay = 0.9
    c.redreg.gamma = 0.6
    c.redreg.trigger = 0.15
    c.redreg.beta_scale = 0.9
    c.redreg.tau_start = 0.2
    c.redreg.tau_end = 0.5
    c.redreg.projection = "per_tensor"  # or "per_modality"
    c.redreg.sigma = 0.03  # input noise of the sensitivity score
    c.redreg.reset_every_epoch = True  # anchor and monitor restart every epoch

    c.ogm_ge = ml_collections.ConfigDict()
    c.ogm_ge.alpha = 0.1
    c.ogm_ge.start_epoch = 0
    c.ogm_ge.end_epoch = 50
    c.ogm_ge.noise = True
    c.ogm_ge.min_ndim = 1
    # GE noise: "inverse_cdf" (jax.random.normal) reproduces the published tables draw for draw;
    # "box_muller" (redundax.transforms.ogm_ge's default) is cheaper.
    c.ogm_ge.normal = "inverse_cdf"

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_epochs = 10

    c.run = ml_collections.ConfigDict()
    c.run.log_every = 5  # steps; the timeline figures show means over these windows
    c.run.progress = config_dict.placeholder(bool)

    if arg is None or arg == "":
        return c
    if arg == "smoke":
        c.seeds = (0,)
        c.methods = "joint,ogm_ge,redreg,redreg_scale"  # every transform code path
        c.train.epochs = 2
        c.optim.boundary_epochs = (1,)
        c.run.log_every = 2
        c.checkpoint.every_epochs = 1
        return c
    if arg in ("cremad", "kinetics_sounds"):
        c.seeds = (0,)
        c.data.name = arg
        c.data.augment = True
        c.eval.batch_size = 64
        c.model.kind = "resnet18"
        c.train.epochs = 80
        c.optim.lr = 2e-3
        c.optim.boundary_epochs = (40,)
        c.modality_dropout.enabled = True
        c.ogm_ge.alpha = 0.8 if arg == "cremad" else 0.1
        c.run.log_every = 10
        c.checkpoint.every_epochs = 1
        return c
    raise ValueError(
        f"Unknown preset {arg!r} for configs/multimodal.py; choose one of: (none), smoke, "
        "cremad, kinetics_sounds."
    )
