"""The channels config follows the shared schema; old field names fail naming their successors."""

import pytest
from ml_collections import ConfigDict

from configs.channels import get_config
from experiments import channels as exp
from redundax.train import config_schema, optim


@pytest.mark.parametrize("preset", ["default", "smoke", "cifar100"])
def test_presets_match_the_schema_and_build_their_optimizers(preset):
    c = get_config(preset)
    config_schema.check_fields(c, get_config())
    for section in (c.optim, c.prune.optim):
        _tx, schedule = optim.build(section, 10)
        assert schedule(0) == section.lr
    assert c.prune.optim.schedule == "constant" and c.optim.schedule == "cosine"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("dataset", "data.name"),
        ("data_dir", "data.data_dir"),
        ("eval_batch_size", "eval.batch_size"),
        ("train.batch_size", "data.batch_size"),
        ("train.momentum", "optim.momentum"),
        ("train.log_every", "run.log_every"),
        ("prune.lr", "prune.optim.lr"),
        ("prune.weight_decay", "prune.optim.weight_decay"),
    ],
)
def test_old_field_names_name_the_new_ones(old, new, tmp_path):
    c = get_config("smoke")
    section, _, name = old.rpartition(".")
    with c.unlocked():
        (c[section] if section else c)[name] = 1
    with pytest.raises(ValueError, match=rf"config\.{old} is now config\.{new}"):
        exp.run(c, tmp_path / "w")
    assert not (tmp_path / "w").exists()  # refused before anything is written


def test_unknown_preset_names_the_presets():
    with pytest.raises(ValueError, match="default, smoke or cifar100"):
        get_config("tiny")
    assert isinstance(get_config(), ConfigDict)
