"""The engine pieces a sweep adds: array-valued evaluation sums (one count per member) and
checkpoint metadata, each against an independent reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from redundax import sweep
from redundax.train import checkpoint, evaluate
from redundax.train import state as state_lib


@pytest.mark.parametrize("batch_size", [5, 7, 35])  # 35 examples: divides, does not, one batch
def test_vmapped_eval_sums_give_per_member_means(batch_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(35, 3)).astype(np.float32)
    scale = np.asarray([1.0, -2.0, 0.5], np.float32)  # one "member" per scale

    def eval_step(s, batch):
        w = batch["mask"].astype(jnp.float32)
        y = s * batch["x"]
        return {
            "mean": jnp.sum(jnp.sum(y, 1) * w),
            "second": jnp.einsum("n,ni,nj->ij", w, y, y),
            "count": jnp.sum(w),
        }

    mesh = sweep.sweep_mesh()
    step = jax.jit(jax.vmap(eval_step, in_axes=(0, None)))
    got = evaluate.evaluate_batches(
        step,
        jnp.asarray(scale),
        evaluate.array_batches({"x": x}, batch_size, mesh),
        batch_size=batch_size,
        mesh=mesh,
    )
    y = scale[:, None, None] * x[None].astype(np.float64)
    np.testing.assert_allclose(got["mean"], y.sum(2).mean(1), rtol=1e-5)
    np.testing.assert_allclose(got["second"], np.einsum("mni,mnj->mij", y, y) / 35, rtol=1e-5)
    assert got["mean"].shape == (3,) and got["second"].shape == (3, 3, 3)
    # scalar sums keep their float results
    scalar = evaluate.evaluate_batches(
        lambda s, b: {k: v[0] for k, v in step(s, b).items() if k != "second"},
        jnp.asarray(scale),
        evaluate.array_batches({"x": x}, batch_size, mesh),
        batch_size=batch_size,
        mesh=mesh,
    )
    assert isinstance(scalar["mean"], float)
    assert scalar["mean"] == pytest.approx(float(x.sum(1).mean()), rel=1e-5)


def test_checkpoint_meta_round_trip(tmp_path):
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    state = state_lib.create(model, optax.sgd(0.1), 0)
    with checkpoint.Checkpointer(tmp_path, every=1, handle_sigterm=False) as ckpt:
        assert ckpt.restore_meta() is None
        meta = {"count": 3, "sums": {"loss": [0.1, 1e-8]}, "histories": [[{"step": 2}]]}
        ckpt.save(2, state, meta=meta)
        ckpt.wait()
        assert ckpt.restore_meta() == {**meta, "config": {}, "step": 2}
    with checkpoint.Checkpointer(tmp_path, every=1, handle_sigterm=False) as ckpt:
        assert ckpt.restore_meta()["sums"]["loss"] == [0.1, 1e-8]  # floats exactly
        restored = ckpt.restore(state)
    np.testing.assert_array_equal(restored.params["kernel"][...], state.params["kernel"][...])
