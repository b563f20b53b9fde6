"""The engine pieces a sweep adds: array-valued evaluation sums (one count per member) and
checkpoint metadata, each against an independent reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import mae as mae_configs
from redundax import mae_sweep, sweep
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


class _TinyProgram:
    """A tiny sweep program: a 6 -> 4 -> 1 MLP regression with the swept value as an L2 weight
    and per-member noise on the inputs (the member's step key), AdamW."""

    tx = optax.adamw(1e-2, weight_decay=0.1)
    learning_rate = None

    def init(self, member: sweep.Member) -> state_lib.TrainState:
        model = nnx.Sequential(
            nnx.Linear(6, 4, rngs=nnx.Rngs(member.seed)),
            nnx.gelu,
            nnx.Linear(4, 1, rngs=nnx.Rngs(member.seed + 100)),
        )
        return state_lib.create(model, self.tx, member.seed)

    def loss_fn(self, model, batch, rng, value):
        x = batch["x"] + 0.1 * jax.random.normal(rng, batch["x"].shape)
        err = model(x)[:, 0] - batch["y"]
        l2 = sum(jnp.sum(p**2) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
        return jnp.mean(err**2) + value * l2, {"mse": jnp.mean(err**2)}


@pytest.mark.parametrize(("members", "chunk"), [(5, 2), (6, 3), (4, 1)])
def test_chunked_member_step_equals_one_vmap(members, chunk):
    """``sweep.member_chunk``: ``lax.map`` over vmapped chunks (5 = 2 + 2 + 1 members: a
    remainder) trains every member as the one vmap over all members does, and as the member
    trained alone (``jit(step)``). Not bit for bit: XLA compiles a vmap of another width to other
    kernels, so a step's results differ by at most 2 units in the last place (1 measured), and
    AdamW's m / sqrt(v) carries such differences on (9 ulp measured after 3 steps)."""
    program = _TinyProgram()
    group = [sweep.Member(0.1 * k, k) for k in range(members)]
    rng = np.random.default_rng(0)
    batches = [
        {
            "x": rng.normal(size=(8, 6)).astype(np.float32),
            "y": rng.normal(size=8).astype(np.float32),
        }
        for _ in range(3)
    ]

    def train(layout, group):
        """Each step's (params, metrics) on the host."""
        state, values = sweep.init_members(program, group, layout)
        step = layout.map(
            sweep.member_step(program),
            in_axes=(0, 0, None),
            donate=(0,),
            out_shardings=(layout.state_sharding, layout.replicated),
        )
        out = []
        for b in batches:
            state, metrics = step(state, values, layout.batch(b))
            out.append(jax.device_get((state.params, metrics)))
        return out

    chunked = sweep.Layout(members, vectorize=True, member_chunk=chunk)
    assert chunked.chunk == chunk
    got = train(chunked, group)
    want = train(sweep.Layout(members, vectorize=True), group)
    for g, w in zip(jax.tree.leaves(got[0]), jax.tree.leaves(want[0]), strict=True):
        assert g.shape[0] == members
        np.testing.assert_array_max_ulp(g, w, maxulp=2)
    for g, w in zip(jax.tree.leaves(got[-1]), jax.tree.leaves(want[-1]), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
    # the last member trained alone, unvectorised
    alone = train(sweep.Layout(1, vectorize=False), group[-1:])
    for g, a in zip(jax.tree.leaves(got[-1]), jax.tree.leaves(alone[-1]), strict=True):
        np.testing.assert_allclose(g[-1], a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunk", [-1, 1.5, True, "3"])
def test_bad_member_chunk_is_refused(chunk):
    with pytest.raises(ValueError, match=r"sweep\.member_chunk"):
        sweep.Layout(4, vectorize=True, member_chunk=chunk)
    if not isinstance(chunk, int):  # the config's int field refuses other types itself
        return
    config = mae_configs.get_config("smoke")
    config.sweep.member_chunk = chunk
    with pytest.raises(ValueError, match=r"sweep\.member_chunk"):  # before any training
        mae_sweep.validate_config(config, mae_configs.get_config())


def test_member_chunk_applies_only_to_an_unsharded_member_axis():
    assert sweep.Layout(3, vectorize=True, member_chunk=3).chunk is None  # one chunk: one vmap
    assert sweep.Layout(3, vectorize=True, member_chunk=0).chunk is None
    assert sweep.Layout(1, vectorize=False, member_chunk=2).chunk is None
    config = mae_configs.get_config("smoke")
    for chunk in (None, 0, 2):  # accepted by the config check
        config.sweep.member_chunk = chunk
        mae_sweep.validate_config(config, mae_configs.get_config())
