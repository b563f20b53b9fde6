"""Sweep engine: vectorised == sequential, checkpoint resume, restart skips finished members."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.mae import get_config
from experiments.mae import Data, MAEProgram
from redundax import sweep

ROOT = pathlib.Path(__file__).resolve().parent.parent


class ArrayIterator:
    """Deterministic batches from a fixed array, with grain-like get_state/set_state."""

    def __init__(self, images, batch, fail_after=None):
        self.images, self.batch, self.i, self.fail_after = images, batch, 0, fail_after

    def __next__(self):
        if self.fail_after is not None and self.i >= self.fail_after:
            raise RuntimeError("simulated crash")
        n = len(self.images) // self.batch
        k = self.i % n
        self.i += 1
        return {"image": self.images[k * self.batch : (k + 1) * self.batch]}

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = int(state["i"])


def small_config():
    c = get_config("smoke")
    c.model.embed_dim, c.model.depth, c.model.num_heads = 32, 1, 2
    c.model.decoder_embed_dim, c.model.decoder_num_heads = 16, 2
    c.data.batch_size = 32
    c.optim.epochs, c.optim.warmup_epochs = 2, 1
    c.eval.batch_size = 32
    c.probe.steps = 20
    return c


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 96).astype(np.int32)
    data = Data(
        make_iterator=None,
        steps_per_epoch=2,
        heldout=images[:32],
        probe_train=(images[:64], labels[:64]),
        probe_test=(images[64:], labels[64:]),
        num_classes=10,
    )
    program = MAEProgram(small_config(), data)
    schedule = sweep.Schedule(num_steps=4, steps_per_epoch=2)
    return program, images, schedule


MEMBERS = [sweep.Member(0.0, 0), sweep.Member(1.0, 1), sweep.Member(500.0, 2)]


def assert_params_close(pa, pb):
    """Parameters equal to float tolerance. The attention key bias has an exactly zero gradient
    (softmax is shift invariant), so Adam's normalised step turns round-off into steps of up to
    ~lr there: that third of each qkv bias is compared at that scale, everything else tightly."""
    flat_a = jax.tree_util.tree_leaves_with_path(pa)
    flat_b = jax.tree_util.tree_leaves_with_path(pb)
    for (path, a), (_, b) in zip(flat_a, flat_b, strict=True):
        name = jax.tree_util.keystr(path)
        a, b = np.asarray(a), np.asarray(b)
        if "qkv" in name and "bias" in name:
            d = a.shape[-1] // 3
            np.testing.assert_allclose(
                a[..., d : 2 * d], b[..., d : 2 * d], atol=5e-3, err_msg=name
            )
            a, b = np.delete(a, np.s_[d : 2 * d], -1), np.delete(b, np.s_[d : 2 * d], -1)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


def _train(program, images, schedule, members, vectorize, **kw):
    axis = sweep.MemberAxis(len(members), vectorize=vectorize)
    return sweep.train_group(
        program,
        members,
        axis,
        data=lambda: ArrayIterator(images, 32),
        eval_data=jnp.asarray(images[:32]),
        schedule=schedule,
        **kw,
    )


def test_vectorised_member_equals_sequential_run(setup):
    program, images, schedule = setup
    stacked, vec_hist = _train(program, images, schedule, MEMBERS, True)
    for k, m in enumerate(MEMBERS):
        alone, seq_hist = _train(program, images, schedule, [m], False)
        assert_params_close(sweep.index(stacked, k)["params"], alone["params"])
        assert [h["step"] for h in vec_hist[k]] == [h["step"] for h in seq_hist[0]] == [0, 2, 4]
        for hv, hs in zip(vec_hist[k], seq_hist[0], strict=True):
            for key in hv:
                if key != "time":
                    assert hv[key] == pytest.approx(hs[key], rel=1e-3, abs=1e-5), key
    # members really differ: same data, different lambda / seed
    p0, p1 = (
        np.asarray(sweep.index(stacked, k)["params"]["patch_embed"]["proj"]["kernel"][...])
        for k in (0, 1)
    )
    assert not np.allclose(p0, p1)
    # the same seed gives the same initialisation whatever lambda is
    i0 = program.init(sweep.Member(0.0, 7))
    i1 = program.init(sweep.Member(5.0, 7))
    for a, b in zip(jax.tree.leaves(i0), jax.tree.leaves(i1), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_resume_equals_uninterrupted(setup, tmp_path):
    program, images, _ = setup
    schedule = sweep.Schedule(num_steps=4, steps_per_epoch=2, checkpoint_every=2)
    members = MEMBERS
    full, _ = _train(program, images, schedule, members, True)
    axis = sweep.MemberAxis(3, vectorize=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sweep.train_group(
            program,
            members,
            axis,
            data=lambda: ArrayIterator(images, 32, fail_after=3),
            eval_data=jnp.asarray(images[:32]),
            schedule=schedule,
            checkpoint_dir=tmp_path / "ck",
        )
    steps_seen = []
    resumed, hist = sweep.train_group(
        program,
        members,
        axis,
        data=lambda: ArrayIterator(images, 32),
        eval_data=jnp.asarray(images[:32]),
        schedule=schedule,
        checkpoint_dir=tmp_path / "ck",
        on_eval=lambda m, r: steps_seen.append(r["step"]),
    )
    assert steps_seen == [4, 4, 4]  # resumed after step 2: only the last evaluation is new
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [h["step"] for h in hist[0]] == [0, 2, 4]


class CountingProgram:
    """Wraps a program and counts the members it initialises."""

    def __init__(self, program):
        self.program, self.inits = program, []

    def init(self, member):
        self.inits.append(member.tag)
        return self.program.init(member)

    def __getattr__(self, name):
        return getattr(self.program, name)


def test_restarted_sweep_skips_finished_members(setup, tmp_path):
    program, images, schedule = setup
    counting = CountingProgram(program)
    store = sweep.ResultStore(tmp_path / "members", "fp1")
    kw = dict(
        data=lambda: ArrayIterator(images, 32),
        eval_data=jnp.asarray(images[:32]),
        schedule=schedule,
    )
    first, _ = sweep.run_sweep(counting, MEMBERS[:1], store=store, vectorize=False, **kw)
    assert counting.inits == [MEMBERS[0].tag]
    counting.inits.clear()
    results, _ = sweep.run_sweep(counting, MEMBERS, store=store, vectorize=False, **kw)
    assert counting.inits == [m.tag for m in MEMBERS[1:]]  # member 0 not re-run
    assert results[MEMBERS[0].tag] == first[MEMBERS[0].tag]
    assert set(results) == {m.tag for m in MEMBERS}
    assert all(0.0 <= r["probe_top1"] <= 1.0 for r in results.values())
    counting.inits.clear()
    sweep.run_sweep(counting, MEMBERS, store=store, vectorize=True, **kw)
    assert counting.inits == []  # nothing left to train, whatever the layout
    with pytest.raises(ValueError, match="different configuration"):
        sweep.ResultStore(tmp_path / "members", "fp2").pending(MEMBERS)


def test_grid_and_axis_validation():
    assert [m.tag for m in sweep.grid([0.0, 0.01], [0, 1])] == [
        "lam_0_seed_0",
        "lam_0_seed_1",
        "lam_0.01_seed_0",
        "lam_0.01_seed_1",
    ]
    with pytest.raises(ValueError, match="at least one value"):
        sweep.grid([], [0])
    with pytest.raises(ValueError, match="at least one seed"):
        sweep.grid([0.0], [])
    with pytest.raises(ValueError, match="distinct"):
        sweep.grid([0.0, 0.0], [0])
    with pytest.raises(ValueError, match="one member at a time"):
        sweep.MemberAxis(2, vectorize=False)
    tree = {"a": jnp.arange(6.0).reshape(3, 2)}
    assert [t["a"].tolist() for t in sweep.unstack(tree)] == [[0, 1], [2, 3], [4, 5]]


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from tests.test_mae_sweep import ArrayIterator, MEMBERS, assert_params_close, small_config
    from experiments.mae import Data, MAEProgram
    from redundax import sweep
    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    images = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 96).astype(np.int32)
    data = Data(None, 2, images[:32], (images[:64], labels[:64]), (images[64:], labels[64:]), 10)
    program = MAEProgram(small_config(), data)
    schedule = sweep.Schedule(num_steps=2, steps_per_epoch=2)
    out = []
    for mesh in (None, sweep.member_mesh()):
        axis = sweep.MemberAxis(3, vectorize=True, mesh=mesh)
        state, hist = sweep.train_group(program, MEMBERS, axis,
            data=lambda: ArrayIterator(images, 32), eval_data=jnp.asarray(images[:32]),
            schedule=schedule)
        if mesh is not None:  # 3 members padded to 4, one per device
            leaf = jax.tree.leaves(state)[0]
            assert leaf.shape[0] == 4 and len(leaf.sharding.device_set) == 4, leaf.sharding
        out.append((axis.take(state["params"]), hist))
    for k in range(3):
        assert_params_close(out[0][0][k], out[1][0][k])
        for a, b in zip(out[0][1][k], out[1][1][k]):
            assert abs(a["val/spectral_redundancy"] - b["val/spectral_redundancy"]) < 1e-4
    print("OK")
""")


@pytest.mark.slow
def test_member_axis_sharded_over_devices_equals_unsharded():
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")
