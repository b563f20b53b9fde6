"""One config schema for every experiment: unknown, old or misspelt fields fail with a hint.

The shared layout is `data.name`, `data.data_dir`, `data.batch_size`, `optim.*` (the fields of
`redundax.train.optim.build`), `train.epochs` / `train.steps`, `eval.*` and `checkpoint.*`;
each experiment adds its own sections (a model, a method's hyper-parameters).

- `check_fields(config, schema, *, renamed=RENAMED)`: raises a `ValueError` listing every field of
  `config` that `schema` lacks, each with the field to use instead: the new name of a renamed
  field (`renamed`, keyed by a dotted path or by a bare field name matching at any depth), else
  the closest field of the schema (`difflib`). `schema` is a nested mapping or `ConfigDict`
  (typically the experiment's default config) whose dotted leaf paths are the allowed fields.
- `epochs_to_steps(optim, steps_per_epoch) -> dict`: an `optim` section whose epoch-valued
  fields (`boundary_epochs`, `warmup_epochs`) are turned into the step-valued fields
  `redundax.train.optim.build` reads (`boundaries`, `warmup_steps`).
- `renamed_field(path, renamed=RENAMED) -> str | None`: the schema's name of an old field (by
  its dotted path, else by its bare name), or None.
- `RENAMED`: the old spellings of the experiments' configs -> the schema's fields.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

RENAMED: dict[str, str] = {
    "num_epochs": "train.epochs",
    "num_steps": "train.steps",
    "epochs": "train.epochs",
    "dataset": "data.name",
    "data.dir": "data.data_dir",
    "data_dir": "data.data_dir",
    "batch_size": "data.batch_size",
    "learning_rate": "optim.lr",
    "lr": "optim.lr",
    "optim.learning_rate": "optim.lr",
    "optim.epochs": "train.epochs",
    "optim.decay_epoch": "optim.boundary_epochs",
    "weight_decay": "optim.weight_decay",
    "momentum": "optim.momentum",
    "eval_batch_size": "eval.batch_size",
    "data.eval_batch_size": "eval.batch_size",
    "run.checkpoint_every_epochs": "checkpoint.every_epochs",
    "run.checkpoint_every": "checkpoint.every_steps",
    "run.keep_checkpoints": "checkpoint.keep",
    "run.eval_every_epochs": "eval.every_epochs",
    "run.eval_every": "eval.every_steps",
    "eval_every": "eval.every_steps",
    "optim.num_epochs": "train.epochs",
    "optim.steps": "train.steps",
    # channels
    "train.batch_size": "data.batch_size",
    "train.augment": "data.augment",
    "train.momentum": "optim.momentum",
    "train.weight_decay": "optim.weight_decay",
    "train.log_every": "run.log_every",
    "prune.lr": "prune.optim.lr",
    "prune.momentum": "prune.optim.momentum",
    "prune.weight_decay": "prune.optim.weight_decay",
    # layers (configs/layers.py before the shared schema)
    "task": "data.name",
    "corpus.source": "data.source",
    "corpus.heldout_fraction": "data.heldout_fraction",
    "corpus.num_calibration": "data.num_calibration",
    "corpus.num_heldout": "data.num_heldout",
    "corpus.num_retrieval": "data.num_retrieval",
    "pad_to_multiple_of": "data.pad_to_multiple_of",
    "recovery.steps": "train.steps",
    "recovery.batch_size": "data.batch_size",
    "recovery.learning_rate": "optim.lr",
    "recovery.weight_decay": "optim.weight_decay",
    "glue.data_dir": "data.data_dir",
    "glue.tasks": "data.tasks",
    "glue.batch_size": "data.batch_size",
    "glue.max_length": "model.max_length",
    "glue.max_train_examples": "data.max_train_examples",
    "glue.max_eval_examples": "data.max_eval_examples",
    "glue.epochs": "glue.train.epochs",
    "glue.recovery_epochs": "glue.train.recovery_epochs",
    "glue.learning_rate": "glue.optim.lr",
    "glue.weight_decay": "glue.optim.weight_decay",
    "glue.warmup_fraction": "glue.optim.warmup_fraction",
    "glue.score_batches": "scores.num_batches",
    "glue.num_removed": "prune.ks",
    "glue.criteria": "prune.criteria",
    "checkpoint_every_epochs": "checkpoint.every_epochs",  # mae
    "sweep.shard_members": "sweep.member_shards",  # mae: the (members, data) mesh
}

_EPOCH_FIELDS = {"boundary_epochs": "boundaries", "warmup_epochs": "warmup_steps"}


def _as_dict(tree: Any, what: str) -> dict[str, Any]:
    if hasattr(tree, "to_dict"):
        return tree.to_dict()
    if isinstance(tree, Mapping):
        return dict(tree)
    raise ValueError(f"`{what}` must be a ConfigDict or a mapping; got {type(tree).__name__}.")


def _paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a nested mapping (an empty section counts as a leaf)."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _paths(value, path + ".")
        else:
            out.append(path)
    return out


def renamed_field(path: str, renamed: Mapping[str, str] | None = None) -> str | None:
    """The new name of the old field `path` (module docstring), or None."""
    renamed = RENAMED if renamed is None else renamed
    new = renamed.get(path) or renamed.get(path.rsplit(".", 1)[-1])
    return None if new == path else new


def _hint(path: str, allowed: list[str], renamed: Mapping[str, str]) -> str:
    new = renamed_field(path, renamed)
    if new is not None:
        return f"config.{path} is now config.{new}"
    close = difflib.get_close_matches(path, allowed, n=1, cutoff=0.6)
    if not close:  # a field put in the wrong section: match its last name
        last = path.rsplit(".", 1)[-1]
        close = [p for p in allowed if p.rsplit(".", 1)[-1] == last][:1]
    if close:
        return f"config.{path} is unknown; did you mean config.{close[0]}?"
    return f"config.{path} is unknown"


def check_fields(config: Any, schema: Any, *, renamed: Mapping[str, str] | None = None) -> None:
    """Raise a `ValueError` naming every field of `config` absent from `schema` (module doc)."""
    renamed = RENAMED if renamed is None else renamed
    allowed = _paths(_as_dict(schema, "schema"))
    allowed_set = set(allowed)
    sections = {p.rsplit(".", 1)[0] for p in allowed if "." in p}
    bad = [
        p
        for p in _paths(_as_dict(config, "config"))
        if p not in allowed_set and p not in sections  # an emptied section is fine
    ]
    if bad:
        hints = "; ".join(_hint(p, allowed, renamed) for p in bad)
        raise ValueError(f"Config fields do not match the schema: {hints}.")


def epochs_to_steps(optim: Any, steps_per_epoch: int) -> dict[str, Any]:
    """`optim` with `boundary_epochs` -> `boundaries` and `warmup_epochs` -> `warmup_steps`."""
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be a positive int; got {steps_per_epoch!r}.")
    fields = _as_dict(optim, "optim")
    for epoch_field, step_field in _EPOCH_FIELDS.items():
        if epoch_field not in fields:
            continue
        if step_field in fields:
            raise ValueError(
                f"optim.{epoch_field} and optim.{step_field} are both set; keep one of them."
            )
        value = fields.pop(epoch_field)
        if epoch_field == "boundary_epochs":
            fields[step_field] = tuple(int(e) * steps_per_epoch for e in value)
        else:
            fields[step_field] = int(value) * steps_per_epoch
    return fields
