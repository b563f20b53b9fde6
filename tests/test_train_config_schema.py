"""The shared config schema check: old and misspelt fields fail with the field to use."""

from __future__ import annotations

import ml_collections
import pytest

from configs import multimodal as multimodal_config
from redundax.train import config_schema


def _schema() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = {"name": "x", "data_dir": None, "batch_size": 64}
    c.train = {"epochs": 3}
    c.optim = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    c.eval = {"batch_size": 128}
    c.checkpoint = {"every_epochs": 1}
    return c


def test_a_config_with_the_schema_fields_passes():
    config_schema.check_fields(_schema(), _schema())
    config_schema.check_fields({"data": {"name": "y"}, "train": {}}, _schema())  # subset


@pytest.mark.parametrize(
    ("field", "suggestion"),
    [
        ("num_epochs", "config.train.epochs"),  # a renamed top-level field
        ("data.dir", "config.data.data_dir"),  # a renamed path
        ("dataset", "config.data.name"),
        ("optim.learning_rate", "config.optim.lr"),  # a renamed bare name, any depth
        ("optim.momentm", "did you mean config.optim.momentum"),  # misspelt: closest field
        ("eval.batch_sise", "did you mean config.eval.batch_size"),
        ("train.batch_size", "config.data.batch_size"),  # renamed bare name wins
        ("model.every_epochs", "did you mean config.checkpoint.every_epochs"),  # wrong section
    ],
)
def test_an_old_or_misspelt_field_names_the_right_one(field, suggestion):
    config = _schema().to_dict()
    node = config
    *sections, last = field.split(".")
    for s in sections:
        node = node.setdefault(s, {})
    node[last] = 1
    with pytest.raises(ValueError, match=f"config.{field}") as err:
        config_schema.check_fields(config, _schema())
    assert suggestion in str(err.value)


def test_every_bad_field_is_reported_and_renames_can_be_given():
    config = {**_schema().to_dict(), "num_epochs": 2, "zzz": 1}
    with pytest.raises(ValueError) as err:
        config_schema.check_fields(config, _schema())
    assert "config.num_epochs is now config.train.epochs" in str(err.value)
    assert "config.zzz is unknown" in str(err.value)
    with pytest.raises(ValueError, match=r"config.zzz is now config.train.epochs"):
        config_schema.check_fields({"zzz": 1}, _schema(), renamed={"zzz": "train.epochs"})
    with pytest.raises(ValueError, match="`config` must be a ConfigDict or a mapping"):
        config_schema.check_fields(3, _schema())


def test_the_multimodal_presets_follow_the_schema_and_old_names_fail():
    schema = multimodal_config.get_config()
    for preset in ("", "smoke", "cremad", "kinetics_sounds"):
        config_schema.check_fields(multimodal_config.get_config(preset), schema)
    old = multimodal_config.get_config("smoke")
    old.unlock()
    old.data.dir = "/data"
    with pytest.raises(ValueError, match=r"config.data.dir is now config.data.data_dir"):
        config_schema.check_fields(old, schema)


def test_epochs_to_steps_converts_epoch_fields():
    optim = {"lr": 0.1, "boundary_epochs": (2, 5), "warmup_epochs": 1, "schedule": "piecewise"}
    out = config_schema.epochs_to_steps(optim, 7)
    assert out == {"lr": 0.1, "boundaries": (14, 35), "warmup_steps": 7, "schedule": "piecewise"}
    assert optim["boundary_epochs"] == (2, 5)  # the input is left alone
    with pytest.raises(ValueError, match="both set"):
        config_schema.epochs_to_steps({"boundary_epochs": (1,), "boundaries": (3,)}, 7)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        config_schema.epochs_to_steps(optim, 0)
