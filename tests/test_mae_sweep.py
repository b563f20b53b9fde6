"""Sweep engine: the vmapped member step is the platform's step, vectorised == sequential, a
crashed group resumes bit-identically from its Checkpointer, a restart skips finished members,
and the (members, data) mesh on 8 devices equals the unsharded sweep."""

import json
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
from redundax import monitor, sweep
from redundax.mae_sweep import Data, MAEProgram
from redundax.models.mae import patchify, representation
from redundax.train import metrics
from redundax.train import step as step_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


class ArrayIterator:
    """Deterministic batches from a fixed array, checkpointable like a grain iterator (its state
    is JSON bytes)."""

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
        return json.dumps({"i": self.i}).encode()

    def set_state(self, state):
        self.i = int(json.loads(state)["i"])

    def start_prefetch(self):  # grain's checkpoint handler calls it after a restore
        pass


def small_config():
    c = get_config("smoke")
    c.data.batch_size = 32
    c.train.epochs, c.optim.warmup_epochs = 2, 1
    c.eval.batch_size = 32
    c.probe.steps = 20
    return c


def make_setup():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 96).astype(np.int32)
    data = Data(
        make_iterator=None,
        steps_per_epoch=2,
        heldout=images[:40],  # 40 = one full batch of 32 and a padded, masked one
        probe_train=(images[:64], labels[:64]),
        probe_test=(images[64:], labels[64:]),
        num_classes=10,
    )
    return MAEProgram(small_config(), data), images


@pytest.fixture(scope="module")
def setup():
    program, images = make_setup()
    return program, images, sweep.Schedule(num_steps=4, steps_per_epoch=2)


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


def _leaves(state) -> list[np.ndarray]:
    """Every array of a train state (PRNG keys as their raw data) on the host."""
    tree = (state.params, state.other, state.opt_state, state.step)
    return [np.asarray(x) for x in jax.tree.leaves(tree)] + [
        np.asarray(jax.random.key_data(state.rng))
    ]


def _train(program, images, schedule, members, vectorize, mesh=None, **kw):
    layout = sweep.Layout(len(members), vectorize=vectorize, mesh=mesh)
    return sweep.train_group(
        program,
        members,
        layout,
        data=kw.pop("data", lambda: ArrayIterator(images, 32)),
        eval_batches=program.heldout_batches(layout.mesh),
        eval_batch_size=32,
        schedule=schedule,
        **kw,
    )


def test_member_step_is_the_platform_train_step(setup):
    """One vmapped member step == make_train_step on that member alone (the same metrics too)."""
    program, images, _ = setup
    member = MEMBERS[1]
    layout = sweep.Layout(2, vectorize=True)
    states, values = sweep.init_members(program, MEMBERS[:2], layout)
    batch = layout.batch({"image": images[:32]})
    step = layout.map(sweep.member_step(program), in_axes=(0, 0, None))
    vec_state, vec_metrics = step(states, values, batch)

    def loss_fn(model, batch, rng):
        return program.loss_fn(model, batch, rng, jnp.float32(member.value))

    alone = step_lib.make_train_step(loss_fn, program.tx, learning_rate=program.learning_rate)
    ref_state, ref_metrics = alone(program.init(member), {"image": jnp.asarray(images[:32])})
    assert set(vec_metrics) == set(ref_metrics) >= {"loss", "recon_loss", "grad_norm"}
    for k in ref_metrics:
        np.testing.assert_allclose(vec_metrics[k][1], ref_metrics[k], rtol=1e-5, err_msg=k)
    assert_params_close(sweep.index(vec_state.params, 1), ref_state.params)


def test_vectorised_member_equals_sequential_run(setup):
    program, images, schedule = setup
    stacked, vec_hist = _train(program, images, schedule, MEMBERS, True)
    for k, m in enumerate(MEMBERS):
        alone, seq_hist = _train(program, images, schedule, [m], False)
        assert_params_close(sweep.index(stacked.params, k), alone.params)
        assert [h["step"] for h in vec_hist[k]] == [h["step"] for h in seq_hist[0]] == [0, 2, 4]
        for hv, hs in zip(vec_hist[k], seq_hist[0], strict=True):
            for key in hv:
                if key != "time":
                    assert hv[key] == pytest.approx(hs[key], rel=1e-3, abs=1e-5), key
    # members really differ: same data, different lambda / seed
    p0, p1 = (
        np.asarray(sweep.index(stacked.params, k)["patch_embed"]["proj"]["kernel"][...])
        for k in (0, 1)
    )
    assert not np.allclose(p0, p1)
    # the same seed gives the same initialisation whatever lambda is
    i0 = program.init(sweep.Member(0.0, 7))
    i1 = program.init(sweep.Member(5.0, 7))
    for a, b in zip(_leaves(i0), _leaves(i1), strict=True):
        np.testing.assert_array_equal(a, b)


def test_heldout_metrics_equal_the_samples_of_z(setup):
    """The two-pass evaluate_batches metrics (40 examples in batches of 32: one padded and
    masked) equal monitor.from_samples of Z computed directly on the whole held-out set."""
    program, images, _ = setup
    layout = sweep.Layout(1, vectorize=False)
    state, values = sweep.init_members(program, MEMBERS[:1], layout)
    got = sweep.evaluate_members(
        program, layout, state, values, program.heldout_batches(layout.mesh), batch_size=32
    )[0]
    model = program.init(MEMBERS[0]).model()
    zs, losses = [], []
    for chunk, (start, n) in enumerate(((0, 32), (32, 8))):  # the second batch: 8 + 24 zeros
        x = np.zeros((32, 8, 8, 1), np.float32)
        x[:n] = images[start : start + n]
        out = model(jnp.asarray(x), jax.random.fold_in(program.eval_key, chunk), 0.75)
        zs.append(np.asarray(representation(out.latent, "mean"))[:n])
        kept = np.asarray(out.mask)[:n]
        err = (np.asarray(out.pred)[:n] - np.asarray(patchify(jnp.asarray(x), 2))[:n]) ** 2
        losses.append(float(np.sum(err.mean(-1) * kept / kept.sum(1, keepdims=True))))
    ref = monitor.from_samples(jnp.asarray(np.concatenate(zs)), tuple(got.keys() - {"recon_loss"}))
    for k, v in ref.items():
        assert got[k] == pytest.approx(float(v), rel=1e-4), k
    assert got["recon_loss"] == pytest.approx(sum(losses) / 40, rel=1e-5)


def test_checkpoint_resume_is_bit_identical_and_metrics_appear_once(setup, tmp_path):
    program, images, _ = setup
    schedule = sweep.Schedule(num_steps=4, steps_per_epoch=2, eval_every=1, checkpoint_every=2)
    full, full_hist = _train(program, images, schedule, MEMBERS, True, log_dir=tmp_path / "ref")
    kw = dict(checkpoint_dir=tmp_path / "ck", log_dir=tmp_path / "log")
    with pytest.raises(RuntimeError, match="simulated crash"):  # after the step-2 checkpoint
        _train(program, images, schedule, MEMBERS, True,
               data=lambda: ArrayIterator(images, 32, fail_after=3), **kw)  # fmt: skip
    written = metrics.read_jsonl(tmp_path / "log" / metrics.METRICS_FILE)
    assert max(r["step"] for r in written) == 3  # a record past the checkpoint, rewritten below
    steps_seen = []
    resumed, hist = _train(program, images, schedule, MEMBERS, True,
                           on_eval=lambda m, r: steps_seen.append(r["step"]), **kw)  # fmt: skip
    assert steps_seen == [3, 3, 3, 4, 4, 4]  # resumed after step 2
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    strip = [[{k: v for k, v in h.items() if k != "time"} for h in m] for m in hist]
    assert strip == [[{k: v for k, v in h.items() if k != "time"} for h in m] for m in full_hist]
    # every (step, member) record once, the same records as the uninterrupted group's
    keys = [(r["step"], next(iter(set(r) - {"step"})).split("/")[0])
            for r in metrics.read_jsonl(tmp_path / "log" / metrics.METRICS_FILE)]  # fmt: skip
    ref = metrics.read_jsonl(tmp_path / "ref" / metrics.METRICS_FILE)
    assert len(keys) == len(set(keys)) == len(ref) == 5 * len(MEMBERS)


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
    mesh = sweep.sweep_mesh()
    kw = dict(
        data=lambda: ArrayIterator(images, 32),
        eval_batches=program.heldout_batches(mesh),
        eval_batch_size=32,
        schedule=schedule,
        mesh=mesh,
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


def test_grid_layout_and_mesh_validation():
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
        sweep.Layout(2, vectorize=False)
    with pytest.raises(ValueError, match="member_shards"):
        sweep.sweep_mesh(0)
    mesh = sweep.sweep_mesh()
    assert mesh.axis_names == ("members", "data") and mesh.devices.size == jax.device_count()
    tree = {"a": jnp.arange(6.0).reshape(3, 2)}
    assert [t["a"].tolist() for t in sweep.unstack(tree)] == [[0, 1], [2, 3], [4, 5]]


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from tests.test_mae_sweep import (ArrayIterator, MEMBERS, _train, assert_params_close,
                                      make_setup)
    from redundax import sweep
    assert jax.device_count() == 8
    program, images = make_setup()
    schedule = sweep.Schedule(num_steps=2, steps_per_epoch=2)
    meshes = {
        "unsharded": sweep.sweep_mesh(devices=jax.devices()[:1]),
        "members 2 x data 4": sweep.sweep_mesh(2),  # 3 members padded to 4
        "data 8": sweep.sweep_mesh(1),
    }
    out = {}
    for name, mesh in meshes.items():
        state, hist = _train(program, images, schedule, MEMBERS, True, mesh=mesh)
        leaf = jax.tree.leaves(state.params)[0]
        assert len(leaf.sharding.device_set) == mesh.devices.size, (name, leaf.sharding)
        layout = sweep.Layout(3, vectorize=True, mesh=mesh)
        probes = program.finish(layout, state, MEMBERS)
        out[name] = (layout.take(state.params), hist, probes)
    ref = out.pop("unsharded")
    for name, (params, hist, probes) in out.items():
        for k in range(3):
            assert_params_close(ref[0][k], params[k])
            for a, b in zip(ref[1][k], hist[k], strict=True):
                for key in a:
                    if key != "time":
                        assert abs(a[key] - b[key]) <= 1e-4 * max(1, abs(a[key])), (name, key)
            assert abs(ref[2][k]["probe_top1"] - probes[k]["probe_top1"]) <= 1 / 32 + 1e-9
    print("OK")
""")


@pytest.mark.slow
def test_members_data_mesh_over_8_devices_equals_unsharded():
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")
