"""redundax.train.cli and configs/classify.py: presets, config errors, workdir protection."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import subprocess
import sys

import optax
import pytest
from flax import nnx

from configs import classify as classify_config
from redundax.train import checkpoint, cli
from redundax.train import state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "experiments.classify", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_presets_and_unknown_preset():
    default, smoke = classify_config.get_config(), classify_config.get_config("smoke")
    assert default.data.name == smoke.data.name == "sklearn_digits"
    assert smoke.train.epochs < default.train.epochs
    cifar = classify_config.get_config("cifar100")
    assert tuple(cifar.model.widths) == (64, 128, 256, 512)
    assert tuple(cifar.model.blocks) == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="smoke, cifar10, cifar100"):
        classify_config.get_config("nope")


def test_unknown_config_field_message_names_the_field():
    config = classify_config.get_config()
    message = cli.unknown_config_field(config, ["--workdir=x", "--config.optim.lrr=0.1"])
    assert "Unknown config field 'optim.lrr'" in message
    assert "optim has no field 'lrr'" in message and "Did you mean 'lr'" in message
    message = cli.unknown_config_field(config, ["--config.optimm.lr=0.1"])
    assert "the config has no field 'optimm'" in message and "'optim'" in message
    assert cli.unknown_config_field(config, ["--config.optim.lr=0.2"]) is None


def test_unknown_config_field_names_the_new_name_of_an_old_field():
    config = classify_config.get_config()
    message = cli.unknown_config_field(config, ["--config.num_epochs=3"])
    assert "config.num_epochs is now config.train.epochs" in message
    message = cli.unknown_config_field(config, ["--config.data.dir=/d"])
    assert "config.data.dir is now config.data.data_dir" in message
    message = cli.unknown_config_field(config, ["--config.run.keep_checkpoints=1"])
    assert "config.run.keep_checkpoints is now config.checkpoint.keep" in message
    # a misspelt section is not an old name of the field under it
    assert "is now" not in cli.unknown_config_field(config, ["--config.optimm.lr=0.1"])


# Every preset of every experiment: the CLI's schema check (`config_problem`, which runs
# `config_schema.check_fields` against the default config) must accept it.
PRESETS = {
    "classify": (None, "smoke", "cifar10", "cifar100"),
    "monitor": (None, "smoke", "minilm"),
    "multimodal": (None, "smoke", "cremad", "kinetics_sounds"),
    "mae": (None, "smoke", "cifar100"),
    "channels": (None, "smoke", "cifar100"),
    "layers": (None, "smoke", "glue"),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_passes_the_schema_check_of_its_experiment(name):
    module = importlib.import_module(f"configs.{name}")
    for preset in PRESETS[name]:
        problem = cli.config_problem(
            module.get_config(preset), str(ROOT / "configs" / f"{name}.py")
        )
        assert problem is None, (preset, problem)
    config = module.get_config()
    config.num_epochs = 3  # an old field name next to the schema's
    problem = cli.config_problem(config, str(ROOT / "configs" / f"{name}.py"))
    assert "config.num_epochs is now config." in problem


def test_cli_rejects_an_unknown_field_before_doing_anything(tmp_path):
    proc = _run_cli(
        "--config",
        "configs/classify.py:smoke",
        "--config.optim.lrr=0.1",
        f"--workdir={tmp_path / 'w'}",
    )
    assert proc.returncode != 0
    assert "Unknown config field 'optim.lrr'" in proc.stderr
    assert "Did you mean 'lr'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_cli_refuses_a_workdir_with_a_checkpoint_of_another_config(tmp_path):
    config = classify_config.get_config("smoke")
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    state = state_lib.create(model, optax.sgd(0.1), 0)
    ckpt_dir = tmp_path / checkpoint.CHECKPOINT_DIR
    with checkpoint.Checkpointer(ckpt_dir, every=1, config=config) as ckpt:
        ckpt.save(1, state)
    (tmp_path / cli.CONFIG_FILE).write_text("original")
    before = sorted(p.name for p in ckpt_dir.iterdir())

    proc = _run_cli(
        "--config", "configs/classify.py:smoke", "--config.optim.lr=0.05", f"--workdir={tmp_path}"
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "optim.lr: 0.1 in the checkpoint, 0.05 now" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Nothing was overwritten.
    assert (tmp_path / cli.CONFIG_FILE).read_text() == "original"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == before
    assert json.loads((ckpt_dir / checkpoint.CONFIG_FILE).read_text())["optim"]["lr"] == 0.1


def test_distributed_start_up_needs_a_complete_description(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert cli.maybe_initialize_distributed() is False  # a single process: nothing to do
    assert cli.maybe_initialize_distributed(num_processes=1) is False
    with pytest.raises(ValueError, match="--process_id"):
        cli.maybe_initialize_distributed("127.0.0.1:1234", num_processes=2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        cli.maybe_initialize_distributed()


def test_default_workdir_is_named_after_the_experiment():
    def run(config, workdir):
        del config, workdir

    run.__module__ = "experiments.classify"
    assert cli._default_workdir(run) == pathlib.Path("runs") / "classify"
