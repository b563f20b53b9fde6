"""The optimizer builder reproduces every experiment's hand-written optax recipe, step for step, and
masked training keeps pruned weights exactly zero."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import classify as classify_config
from experiments import classify
from redundax.train import optim
from redundax.transforms.masking import keep_pruned_zero


def _params():
    key = jax.random.key(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "conv": {
            "kernel": jax.random.normal(k1, (3, 3, 2, 4)),
            "bias": jax.random.normal(k2, (4,)),
        },
        "dense": {"kernel": jax.random.normal(k3, (4, 5)), "bias": jnp.zeros(5)},
        "pos_embed": jax.random.normal(k4, (1, 6, 4)),
    }


def _run(tx, steps=12, seed=1):
    params = _params()
    state = tx.init(params)
    key = jax.random.key(seed)
    for _ in range(steps):
        key, sub = jax.random.split(key)
        leaves, treedef = jax.tree.flatten(params)
        subs = jax.random.split(sub, len(leaves))
        grads = jax.tree.unflatten(
            treedef, [jax.random.normal(k, x.shape) for k, x in zip(subs, leaves, strict=True)]
        )
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_classify_recipe():
    total, warmup = 30, 5
    reference = optax.chain(
        optax.add_decayed_weights(5e-4),
        optax.sgd(
            optax.warmup_cosine_decay_schedule(0.0, 0.1, warmup, decay_steps=total),
            momentum=0.9,
            nesterov=True,
        ),
    )
    section = {
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_steps": warmup,
    }
    tx, schedule = optim.build(section, total)
    _assert_same(_run(tx), _run(reference))
    assert float(schedule(warmup)) == pytest.approx(0.1)


def test_multimodal_piecewise_recipe():
    reference = optax.chain(
        optax.add_decayed_weights(1e-4),
        optax.sgd(optax.piecewise_constant_schedule(1e-3, {6: 0.1}), momentum=0.9),
    )
    section = {
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "piecewise",
        "boundaries": (6,),
        "decay_factor": 0.1,
    }
    tx, _ = optim.build(section, 12)
    _assert_same(_run(tx), _run(reference))


def test_mae_adamw_recipe():
    total, warmup = 20, 4
    reference = optax.adamw(
        optax.warmup_cosine_decay_schedule(0.0, 1.5e-3, warmup, total, 0.0),
        b1=0.9,
        b2=0.95,
        weight_decay=0.05,
        mask=lambda p: jax.tree.map(lambda x: x.ndim == 2, p),
    )
    section = {
        "name": "adamw",
        "lr": 1.5e-3,
        "b1": 0.9,
        "b2": 0.95,
        "weight_decay": 0.05,
        "decay_mask": "matrices",
        "warmup_steps": warmup,
    }
    tx, _ = optim.build(section, total)
    _assert_same(_run(tx, steps=total), _run(reference, steps=total))


def test_layers_linear_warmup_recipe():
    steps, warmup = 16, 2
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, 2e-5, warmup),
            optax.linear_schedule(2e-5, 0.0, steps - warmup),
        ],
        [warmup],
    )
    reference = optax.adamw(schedule, weight_decay=0.01)
    section = {
        "name": "adamw",
        "lr": 2e-5,
        "weight_decay": 0.01,
        "schedule": "linear",
        "warmup_steps": warmup,
    }
    tx, built = optim.build(section, steps)
    _assert_same(_run(tx, steps=steps), _run(reference, steps=steps))
    for t in range(steps + 1):
        assert float(built(t)) == pytest.approx(float(schedule(t)), abs=1e-12)


def test_weights_mask_excludes_bias_and_embeddings():
    mask = optim.decay_mask("weights")(_params())
    assert mask == {
        "conv": {"kernel": True, "bias": False},
        "dense": {"kernel": True, "bias": False},
        "pos_embed": False,
    }


def test_clipping_comes_before_the_optimizer():
    section = {"name": "sgd", "lr": 1.0, "momentum": 0.0, "schedule": "constant", "clip_norm": 1.0}
    tx, _ = optim.build(section, 10)
    grads = {"w": jnp.array([3.0, 4.0])}
    updates, _ = tx.update(grads, tx.init(grads), grads)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"lr": 0.1, "learning_rate": 0.1}, "did you mean optim.lr"),
        ({"lr": 0.1, "name": "lion"}, "optim.name"),
        ({"lr": 0.1, "schedule": "exp"}, "optim.schedule"),
        ({"name": "sgd"}, "optim.lr is required"),
        ({"lr": 0.1, "weight_decay_mode": "decoupled"}, "needs optim.name='adamw'"),
        ({"lr": 0.1, "warmup_steps": 50}, "warmup_steps"),
    ],
)
def test_bad_sections(section, message):
    with pytest.raises(ValueError, match=message):
        optim.build(section, 10)


@pytest.mark.parametrize(
    "section",
    [
        {"name": "sgd", "lr": 0.5, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
        {"name": "adamw", "lr": 0.05, "weight_decay": 0.1, "warmup_steps": 2},
        {"name": "adamw", "lr": 0.05, "weight_decay": 0.1, "weight_decay_mode": "l2"},
    ],
)
def test_pruned_weights_stay_exactly_zero(section):
    mask = {
        "conv": {
            "kernel": np.arange(np.prod((3, 3, 2, 4))).reshape(3, 3, 2, 4) % 3 != 0,
            "bias": np.array([1, 0, 1, 0], bool),
        },
        "dense": {"kernel": None, "bias": None},
        "pos_embed": None,
    }
    tx, _ = optim.build(section, 12, prune_mask=mask)
    unmasked, _ = optim.build(section, 12)
    out, free = _run(tx), _run(unmasked)
    for got, m in (
        (out["conv"]["kernel"], mask["conv"]["kernel"]),
        (out["conv"]["bias"], mask["conv"]["bias"]),
    ):
        assert np.all(np.asarray(got)[~m] == 0.0)
        assert np.all(np.asarray(got)[m] != 0.0)
    # Elementwise optimizers: unpruned entries follow the unmasked run exactly.
    np.testing.assert_allclose(
        out["conv"]["kernel"][mask["conv"]["kernel"]],
        free["conv"]["kernel"][mask["conv"]["kernel"]],
        rtol=1e-6,
    )
    _assert_same(out["dense"], free["dense"])


def test_mask_shape_mismatch_is_named():
    tx = keep_pruned_zero({"w": np.ones(3, bool)})
    with pytest.raises(ValueError, match="must match each parameter's shape"):
        tx.init({"w": jnp.zeros(4)})


def test_classify_optimizer_is_its_former_hand_written_chain():
    config = classify_config.get_config()
    config.train.epochs = 3
    tx, schedule = classify.make_optimizer(config, steps_per_epoch=4)
    o, total, warmup = config.optim, 12, 4
    reference = optax.chain(
        optax.add_decayed_weights(o.weight_decay),
        optax.sgd(
            optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, decay_steps=total),
            momentum=o.momentum,
            nesterov=o.nesterov,
        ),
    )
    _assert_same(_run(tx, steps=total), _run(reference, steps=total))
    assert float(schedule(warmup)) == pytest.approx(o.lr)
