"""`redundax.multimodal` on the engine: optimizer, evaluation, data registry, similarity."""

from __future__ import annotations

import itertools
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import redundax as rx
import redundax.data as rd
from configs import multimodal as multimodal_config
from experiments import multimodal as experiment
from redundax import functionals as F
from redundax import multimodal as mm
from redundax.data import multimodal as mdata
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib
from redundax.train import step as step_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = mdata.dataset_info("digits_two_view")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mmdata")


def _config(epochs: int = 3, decay_epoch: int = 1):
    c = multimodal_config.get_config("smoke")
    c.model.hidden, c.model.features = 8, 4
    c.train.epochs = epochs
    c.optim.boundary_epochs = (decay_epoch,)
    return c


def _previous_chain(config, before, steps_per_epoch):
    """The recipe the experiment used before `optim.build`: written out with optax."""
    o = config.optim
    schedule = optax.piecewise_constant_schedule(
        o.lr, {o.boundary_epochs[0] * steps_per_epoch: o.decay_factor}
    )
    parts = [optax.add_decayed_weights(o.weight_decay), optax.sgd(schedule, momentum=o.momentum)]
    return optax.chain(*before, *parts), schedule


@pytest.mark.parametrize("method", ["joint", "ogm_ge", "redreg"])
def test_optimizer_is_the_previous_recipe_update_for_update(method):
    config, spe = _config(), 2
    params = state_lib.create(mm.make_model(config.model, SPEC, 0), optax.sgd(0.1), 0).params
    tx, schedule = mm.make_optimizer(config, method, spe, seed=3)
    ref, ref_schedule = _previous_chain(
        config, mm.gradient_transforms(config, method, spe, seed=3), spe
    )
    assert [schedule(t) for t in range(6)] == [ref_schedule(t) for t in range(6)]
    assert float(schedule(1)) == pytest.approx(0.05) and float(schedule(2)) == pytest.approx(0.005)
    s, r = tx.init(params), ref.init(params)
    key = jax.random.key(0)
    for t in range(5):  # crosses the decay boundary at step 2
        key, k = jax.random.split(key)
        grads = jax.tree.map(lambda p, kk=k: jax.random.normal(kk, p.shape), params)
        names = SPEC.modalities
        extra = {
            "probs": {m: jnp.float32(0.3 + 0.4 * i) for i, m in enumerate(names)},
            "scores": {m: jnp.float32(0.6 - 0.2 * i + 0.05 * t) for i, m in enumerate(names)},
            "similarity": {m: jnp.float32(0.2) for m in names},
            "sensitivity": {m: jnp.float32(0.1 * (i + 1) * (t + 1)) for i, m in enumerate(names)},
        }
        u, s = optax.with_extra_args_support(tx).update(grads, s, params, **extra)
        v, r = optax.with_extra_args_support(ref).update(grads, r, params, **extra)
        jax.tree.map(np.testing.assert_array_equal, u, v)
        params = optax.apply_updates(params, u)


def test_unknown_method_and_model_kind_are_refused():
    with pytest.raises(ValueError, match=r"config.methods must list"):
        mm.parse_methods("joint,redreg_typo")
    with pytest.raises(ValueError, match=r"config.methods must list"):
        mm.gradient_transforms(_config(), "typo", 2)
    config = _config()
    config.model.kind = "vit"
    with pytest.raises(ValueError, match=r"config.model.kind"):
        mm.make_model(config.model, SPEC, 0)


def test_evaluate_equals_brute_force_for_any_batch_size(data_dir):
    config = _config()
    model = mm.make_model(config.model, SPEC, 1)
    mesh = mesh_lib.make_data_mesh()
    state = mesh_lib.replicate(state_lib.create(model, optax.sgd(0.1), 0), mesh)
    eval_step = step_lib.make_eval_step(mm.make_metric_fn(SPEC.modalities), mesh=mesh)
    # brute force: the whole test split at once, NumPy argmax and counts
    inputs, labels = rd.load_arrays("digits_two_view", "test", data_dir)
    model.eval()
    out = model({m: jnp.asarray(v) for m, v in inputs.items()})

    def acc(logits) -> float:
        return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))

    expected = {"test/acc_fused": acc(out.logits)}
    for m in SPEC.modalities:
        expected[f"test/acc/{m}"] = acc(out.unimodal_logits[m])
        expected[f"test/acc_slice/{m}"] = acc(out.slice_logits[m])
    accs = [expected[f"test/acc/{m}"] for m in SPEC.modalities]
    slices = [expected[f"test/acc_slice/{m}"] for m in SPEC.modalities]
    expected["test/imbalance"] = max(accs) - min(accs)
    expected["test/imbalance_slice"] = max(slices) - min(slices)
    source = rd.get_source("digits_two_view", "test", data_dir)
    for batch_size in (360, 64, 7):  # divides the 360 examples, and does not
        batches = mm.eval_batches(source, batch_size)
        got = mm.evaluate(
            eval_step, state, batches(), SPEC.modalities, batch_size=batch_size, mesh=mesh
        )
        assert got.keys() == expected.keys()
        for k, v in expected.items():
            assert got[k] == pytest.approx(v, abs=1e-12), (batch_size, k)


def test_summarise_and_table():
    runs = [
        {"method": "joint", "seed": s, "test/acc_fused": a, "test/acc/x": b, "steps": 3}
        for s, a, b in [(0, 0.5, 0.25), (1, 0.75, 0.25)]
    ]
    table = mm.summarise(runs)
    assert table == {"joint": {"acc_fused": (0.625, 0.125), "acc/x": (0.25, 0.0)}}


def test_one_registry_serves_the_multimodal_datasets(data_dir, tmp_path):
    names = rd.known_datasets()
    for name in ("sklearn_digits", "cifar10", "digits_two_view", "cremad", "kinetics_sounds"):
        assert name in names
    assert rd.is_multimodal("cremad") and not rd.is_multimodal("cifar10")
    source = rd.get_source("digits_two_view", "test", data_dir)
    assert isinstance(source, mdata.MultimodalSource) and len(source) == 360
    assert {"coarse", "occluded", "label"} <= set(source[0])
    assert rd.dataset_info("cremad", "3fps").shapes["visual"] == (3, 224, 224, 3)
    assert rd.dataset_info("sklearn_digits").image_shape == (8, 8, 1)
    with pytest.raises(FileNotFoundError, match="AudioWAV"):  # the missing-archive error stays
        rd.get_source("cremad", "train", tmp_path)
    with pytest.raises(FileNotFoundError, match="ks_train_overlap"):
        rd.get_source("kinetics_sounds", "train", tmp_path)
    with pytest.raises(ValueError, match="digits_two_view"):  # the error lists every name
        rd.get_source("mnist", "train", tmp_path)


def test_the_experiment_refuses_an_old_field(tmp_path):
    config = _config()
    config.num_epochs = 2
    with pytest.raises(ValueError, match=r"config.num_epochs is now config.train.epochs"):
        experiment.run(config, tmp_path)
    config = _config()
    config.data.name = "sklearn_digits"
    with pytest.raises(ValueError, match=r"config.data.name must be a multimodal dataset"):
        experiment.run(config, tmp_path)


def test_cross_modal_similarity_lives_in_functionals():
    assert rx.functionals.cross_modal_similarity is rx.transforms.cross_modal_similarity
    rng = np.random.default_rng(0)
    z = {m: rng.normal(size=(5, 3)).astype(np.float32) for m in "abc"}
    got = rx.functionals.cross_modal_similarity(z)

    def cos(x, y):  # row by row, brute force
        return np.mean(
            [x[i] @ y[i] / np.linalg.norm(x[i]) / np.linalg.norm(y[i]) for i in range(5)]
        )

    for m in "abc":
        others = [cos(z[m], z[j]) for j in "abc" if j != m]
        assert float(got[m]) == pytest.approx(np.mean(others), rel=1e-5)
    pairs = {(a, b): cos(z[a], z[b]) for a, b in itertools.combinations("abc", 2)}
    assert float(got["a"]) == pytest.approx((pairs["a", "b"] + pairs["a", "c"]) / 2, rel=1e-5)


def test_importing_the_experiment_leaves_the_backend_unstarted():
    """`jax.distributed.initialize` (multi-process runs) must come before any JAX computation."""
    code = (
        "import jax._src.xla_bridge as xb, experiments.multimodal; "
        "assert not xb._backends, 'an import started the JAX backend'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    # the built-in f-kernels skip their construction check at import; they pass it
    for k in (F.kl, F.pearson_chi2, F.squared_hellinger, F.jensen_shannon, F.total_variation):
        F.FKernel(k.name, k.f, k.conjugate, gaussian=k.gaussian)
