"""MAE redundancy-balance sweep (Bi, Zhu & Calhoun, 2025, Sec. 4-5, eq. 2, Table 2, Figs. 1-2).

    python -m experiments.mae --config configs/mae.py --workdir runs/mae            # digits, CPU
    python -m experiments.mae --config configs/mae.py:smoke --workdir /tmp/mae       # < 1 minute
    python -m experiments.mae --config configs/mae.py:cifar100 --workdir runs/c100   # GPU / TPU
    ... --config.sweep.lambdas='(0.01,)' --config.sweep.seeds='(0,)'                 # one member
    ... --config.sweep.refine.rounds=0                                              # grid only

Presets:
  default   scikit-learn digits (8x8, offline), tiny MAE (patch 2), 7 lambdas containing the
            paper's four x 3 seeds, trained as one vectorised program (the grid alone: 265 s on 2
            idle CPU cores, with host memory kept; `sweep.vectorize=False` trains the members one
            by one: grid 469 s), then
            up to 2 refinement rounds adding at most 3 lambdas x 3 seeds (9 members) where
            neighbouring mean R_spec differ by more than 0.1; about 1.5x the grid's time.
  smoke     the whole pipeline (2 lambdas x 2 seeds, 2 epochs, a one-block MAE, short probe, one
            refinement round adding lambda = 0.1 x 2 seeds) in about a minute.
  cifar100  the paper's protocol: ViT-Base encoder with the MAE decoder, mask ratio 0.75, the paper's
            four lambdas {0, 1e-3, 1e-2, 5e2} (round 0, so Table 2 can be read off) and up to 4
            refined lambdas in 2 rounds, linear probe on CIFAR-100. The paper does not state the
            patch size, epochs, batch size or optimiser; the values below follow MAE (He et al.,
            2022: AdamW, betas (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 x batch / 256, warmup
            then cosine) with patch 4 on 32x32 images. Members train one after another, each data
            parallel over all devices.

The schema is the one of every experiment (`redundax.train.config_schema`): `data.*`,
`train.epochs`, `optim.*` (`redundax.train.optim.build`; `warmup_epochs` is turned into steps),
`eval.*`, `checkpoint.*`, `run.*`; an old field name (`optim.learning_rate`, `optim.epochs`,
`checkpoint_every_epochs`, `sweep.shard_members`) is an error naming its successor. The `sweep`,
`r_star`, `run` and `checkpoint` sections and `eval.final_epochs` may change when a sweep is
resumed (members are stored by tag); every other field must match.
"""

from __future__ import annotations

from ml_collections import ConfigDict, config_dict

PAPER_LAMBDAS = (0.0, 1e-3, 1e-2, 5e2)
DIGITS_LAMBDAS = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 5e2)


def _model(size: str) -> ConfigDict:
    """Model fields; None (placeholder) fields take the named size's value."""
    ph = config_dict.placeholder
    return ConfigDict(
        {
            "size": size,
            "patch_size": ph(int),
            "embed_dim": ph(int),
            "depth": ph(int),
            "num_heads": ph(int),
            "decoder_embed_dim": ph(int),
            "decoder_depth": ph(int),
            "decoder_num_heads": ph(int),
            "mlp_ratio": ph(float),
            "norm_pix_loss": False,
            "dtype": "float32",
        }
    )


def get_config(arg: str | None = None) -> ConfigDict:
    """The default digits sweep, or a preset: ``smoke`` or ``cifar100``."""
    c = ConfigDict()
    c.data = ConfigDict(
        {
            "name": "sklearn_digits",
            "data_dir": config_dict.placeholder(str),
            "batch_size": 128,  # global batch; R_spec is taken over it (eq. 2)
            "seed": 0,  # the data order, shared by every member
            "augment": False,
        }
    )
    c.model = _model("tiny")
    c.mask_ratio = 0.75
    c.z_mode = "mean"  # Z for R_spec: "mean" over visible tokens, "cls", or "tokens"
    c.train = ConfigDict({"epochs": 80})
    # redundax.train.optim.build: AdamW (MAE, He et al., 2022), linear warm-up to the peak rate,
    # cosine decay to 0; decoupled weight decay on matrices only (not biases, norms or tokens)
    c.optim = ConfigDict(
        {
            "name": "adamw",
            "lr": 1e-3,
            "warmup_epochs": 5,
            "weight_decay": 0.05,
            "decay_mask": "matrices",
            "b1": 0.9,
            "b2": 0.95,
            "schedule": "cosine",
        }
    )
    c.sweep = ConfigDict(
        {
            "lambdas": DIGITS_LAMBDAS,
            "seeds": (0, 1, 2),
            "vectorize": True,  # one vmapped program over all members
            # devices holding different members on the (members, data) mesh; the others split
            # each batch (1: every device splits the batch; vectorised only when > 1)
            "member_shards": 1,
            # vectorised with member_shards=1: run the members `member_chunk` at a time in a
            # loop inside the one program (jax.lax.map over vmapped chunks), which keeps a step's
            # working set in the CPU's caches (benchmarks/sweep_step.py); 0 or None: all in one
            # vmap. Off by default: chunks change results by float round-off (README)
            "member_chunk": config_dict.FieldReference(0, field_type=int),
            # Adaptive refinement (redundax.analysis.lambda_grid.refine): after the grid above,
            # up to `rounds` rounds add geometric midpoints of neighbouring lambdas whose mean
            # R_spec differ by more than `gap` (never between values equal within `tol`, never a
            # positive pair closer than `min_ratio`), at most `max_members` new members in all
            # (lambdas x seeds); each round trains as one vectorised group. rounds=0: off.
            "refine": ConfigDict(
                {"rounds": 2, "max_members": 9, "gap": 0.1, "tol": 0.01, "min_ratio": 1.5}
            ),
        }
    )
    c.eval = ConfigDict(
        {
            "heldout_size": 360,  # fixed held-out batch (first images of the test split)
            "every_steps": 0,  # extra evaluations every k steps (0: once per epoch)
            "final_epochs": 10,  # Table 2 averages R_spec etc. over the final epochs
            "mask_seed": 12345,  # fixed masks for held-out Z and validation loss
            "batch_size": 1024,  # chunk size for held-out and probe forward passes
        }
    )
    c.probe = ConfigDict(
        {
            "steps": 1000,
            "learning_rate": 1e-2,
            "weight_decay": 1e-4,
            "batch_size": config_dict.placeholder(int),  # None: full training split per step
            "seed": 0,
        }
    )
    # R*: quadratic fit, bootstrap interval at `level`, two-lines test at one-sided `alpha`;
    # "measured" only with members within `resolution` (R_spec) on both sides of the fitted peak
    c.r_star = ConfigDict(
        {"bootstrap": 2000, "seed": 0, "level": 0.9, "alpha": 0.05, "resolution": 0.1}
    )
    c.checkpoint = ConfigDict({"every_epochs": 20})  # 0: only at the end of a group (+ SIGTERM)
    # member log lines every `log_every` epochs; progress: a bar (None: on a terminal)
    c.run = ConfigDict({"log_every": 20, "progress": config_dict.placeholder(bool)})

    if arg in (None, "", "digits"):
        return c
    if arg == "smoke":
        c.model.embed_dim, c.model.depth, c.model.num_heads = 32, 1, 2
        c.model.decoder_embed_dim, c.model.decoder_num_heads = 16, 2
        c.sweep.lambdas = (0.0, 1.0)
        c.sweep.seeds = (0, 1)
        c.sweep.refine.update(rounds=1, max_members=2, gap=1e-3, tol=0.0)  # one round, one lambda
        c.train.epochs = 2
        c.optim.warmup_epochs = 1
        c.eval.heldout_size = 128
        c.eval.final_epochs = 1
        c.probe.steps = 50
        c.r_star.bootstrap = 50
        c.checkpoint.every_epochs = 1
        c.run.log_every = 1
        return c
    if arg == "cifar100":
        c.data.name = "cifar100"
        c.data.batch_size = 256
        c.data.augment = True
        c.model = _model("base")
        c.model.patch_size = 4
        c.model.dtype = "bfloat16"
        c.train.epochs = 400
        c.optim.lr = 1.5e-4 * 256 / 256
        c.optim.warmup_epochs = 40
        c.sweep.lambdas = PAPER_LAMBDAS  # always trained (round 0), so Table 2 can be read off
        c.sweep.seeds = (0,)
        c.sweep.refine.update(rounds=2, max_members=4)
        c.sweep.vectorize = False
        c.eval.heldout_size = 2048
        c.eval.batch_size = 512
        c.probe.steps = 5000
        c.probe.learning_rate = 1e-3
        c.probe.batch_size = 1024
        c.checkpoint.every_epochs = 5
        c.run.log_every = 1
        return c
    raise ValueError(f"Unknown preset {arg!r} for configs/mae.py; choose smoke or cifar100.")
