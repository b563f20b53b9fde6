"""RedReg transform, orthogonal-complement projection and perturbation sensitivity.

References are independent of the implementation: least-squares projections in NumPy, a
list-based re-implementation of the reference code's monitor loop, closed forms.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from redundax.functionals.sensitivity import perturbation_sensitivity
from redundax.transforms import (
    cross_modal_similarity,
    orthogonal_complement,
    projection_coefficients,
    redreg,
    tau_linear,
)

# ----------------------------------------------------------------------------- helpers


def _tree(rng: np.random.Generator) -> dict:
    return {
        "enc": {
            "a": {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))},
            "v": {"w": rng.normal(size=(2, 5))},
        },
        "head": {"w": rng.normal(size=(9, 3))},
    }


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


LABELS = {"enc": {"a": {"w": "a", "b": "a"}, "v": {"w": "v"}}, "head": {"w": None}}


def _labels_fn(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: path[1].key if path[0].key == "enc" else None, params
    )


def _ls_residual(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """x minus its least-squares fit on span(g): NumPy lstsq, an independent projection."""
    x, g = x.ravel().astype(np.float64), g.ravel().astype(np.float64)
    coef = np.linalg.lstsq(g[:, None], x, rcond=None)[0]
    return x - g * coef[0]


def _signals(probs=(0.7, 0.3), red=(1.0, 1.0), sim=0.9):
    return {
        "probs": {"a": probs[0], "v": probs[1]},
        "sensitivity": {"a": red[0], "v": red[1]},
        "similarity": sim,
    }


def _drive(tx, params, grads_seq, signals_seq, lr=0.1):
    """Apply ``tx`` then SGD by hand for a sequence of gradients; returns states and outputs."""
    state = tx.init(params)
    outs, states, params_seq = [], [], []
    for g, sig in zip(grads_seq, signals_seq, strict=True):
        params_seq.append(params)
        u, state = tx.update(g, state, params, **sig)
        outs.append(u)
        states.append(state)
        params = jax.tree.map(lambda p, d: p - lr * d, params, u)
    return outs, states, params_seq


# ----------------------------------------------------------------------------- projection


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_orthogonal_complement_matches_least_squares_per_leaf(seed, scale):
    rng = np.random.default_rng(seed)
    x, g = _tree(rng), jax.tree.map(lambda a: scale * a, _tree(rng))
    out = orthogonal_complement(_f32(x), _f32(g), per_leaf=True)
    for o, xl, gl in zip(jax.tree.leaves(out), jax.tree.leaves(x), jax.tree.leaves(g), strict=True):
        ref = _ls_residual(xl, gl)
        np.testing.assert_allclose(np.asarray(o).ravel(), ref, rtol=2e-4, atol=2e-5)
        # orthogonal to g, relative to the sizes involved
        dot = float(np.dot(np.asarray(o, np.float64).ravel(), gl.ravel()))
        assert abs(dot) <= 1e-4 * np.linalg.norm(xl) * np.linalg.norm(gl)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_orthogonal_complement_over_whole_tree_matches_flattened_least_squares(seed):
    rng = np.random.default_rng(seed)
    x, g = _tree(rng), _tree(rng)
    out = orthogonal_complement(_f32(x), _f32(g), per_leaf=False)
    flat_x = np.concatenate([a.ravel() for a in jax.tree.leaves(x)])
    flat_g = np.concatenate([a.ravel() for a in jax.tree.leaves(g)])
    flat_o = np.concatenate([np.asarray(a).ravel() for a in jax.tree.leaves(out)])
    np.testing.assert_allclose(flat_o, _ls_residual(flat_x, flat_g), rtol=2e-4, atol=2e-5)
    # one scalar coefficient for the whole tree
    coef = projection_coefficients(_f32(x), _f32(g), per_leaf=False)
    assert np.shape(coef) == ()


def test_orthogonal_complement_zero_direction_returns_input_and_keeps_dtype():
    x = {"a": jnp.arange(4.0, dtype=jnp.bfloat16), "b": jnp.ones((2, 2))}
    g = {"a": jnp.zeros(4, jnp.bfloat16), "b": jnp.zeros((2, 2))}
    out = orthogonal_complement(x, g)
    chex.assert_trees_all_equal(out, x)
    assert out["a"].dtype == jnp.bfloat16
    out = orthogonal_complement(x, g, per_leaf=False)
    chex.assert_trees_all_equal(out, x)


def test_orthogonal_complement_rejects_mismatched_trees():
    with pytest.raises(ValueError, match="same tree structure"):
        orthogonal_complement({"a": jnp.ones(2)}, {"b": jnp.ones(2)})
    with pytest.raises(ValueError, match="equal shapes"):
        orthogonal_complement({"a": jnp.ones(2)}, {"a": jnp.ones(3)})


# ----------------------------------------------------------------------------- acceptance


def _suppressing_run(projection: str, steps: int = 4, seed: int = 0):
    """A run in which modality "a" dominates, the gate is open and the monitor fires."""
    rng = np.random.default_rng(seed)
    params = _f32(_tree(rng))
    grads = [_f32(_tree(rng)) for _ in range(steps)]
    tx = redreg(LABELS, tau=0.0, projection=projection, window=2)
    sig = [_signals(probs=(0.6 + 0.01 * t, 0.3)) for t in range(steps)]
    outs, states, params_seq = _drive(tx, params, grads, sig)
    return params, grads, outs, states, params_seq


@pytest.mark.parametrize("projection", ["per_tensor", "per_modality"])
def test_suppressed_update_is_orthogonal_to_gradient_and_parallel_to_projected_drift(projection):
    params0, grads, outs, states, params_seq = _suppressing_run(projection)
    t = len(grads) - 1  # drift is non-zero after the first step
    beta = float(states[t].beta["a"])
    assert beta == pytest.approx(math.exp(0.9 * math.tanh(0.6 + 0.01 * t - 0.3)), rel=1e-6)
    leaves = ["w", "b"]
    delta = {
        k: np.asarray(outs[t]["enc"]["a"][k] - grads[t]["enc"]["a"][k], np.float64) for k in leaves
    }
    g = {k: np.asarray(grads[t]["enc"]["a"][k], np.float64) for k in leaves}
    # drift from the anchor (the initial parameters: no reset configured), independently
    d = {
        k: np.asarray(params_seq[t]["enc"]["a"][k] - params0["enc"]["a"][k], np.float64)
        for k in leaves
    }
    if projection == "per_tensor":
        for k in leaves:
            scale = np.linalg.norm(delta[k]) * np.linalg.norm(g[k])
            assert abs(np.vdot(delta[k], g[k])) <= 1e-5 * scale
            np.testing.assert_allclose(
                delta[k].ravel(), beta * _ls_residual(d[k], g[k]), rtol=1e-4, atol=1e-6
            )
    else:
        flat_delta = np.concatenate([delta[k].ravel() for k in leaves])
        flat_g = np.concatenate([g[k].ravel() for k in leaves])
        flat_d = np.concatenate([d[k].ravel() for k in leaves])
        scale = np.linalg.norm(flat_delta) * np.linalg.norm(flat_g)
        assert abs(np.vdot(flat_delta, flat_g)) <= 1e-5 * scale
        np.testing.assert_allclose(
            flat_delta, beta * _ls_residual(flat_d, flat_g), rtol=1e-4, atol=1e-6
        )
        # not orthogonal leaf by leaf, only in total
        per_leaf = [
            abs(np.vdot(delta[k], g[k])) / (np.linalg.norm(delta[k]) * np.linalg.norm(g[k]))
            for k in leaves
        ]
        assert max(per_leaf) > 1e-3
    assert np.linalg.norm(np.concatenate([delta[k].ravel() for k in leaves])) > 1e-3


@pytest.mark.parametrize(
    "signals, kwargs",
    [
        (_signals(sim=0.1), {"tau": 0.5}),  # gate closed
        (_signals(), {"tau": 0.0, "trigger": 1e9}),  # no modality above the trigger
        (_signals(probs=(0.4, 0.4)), {"tau": 0.0}),  # no dominant modality
    ],
    ids=["gate-closed", "below-trigger", "tie"],
)
def test_identity_when_gate_closed_or_below_trigger(signals, kwargs):
    rng = np.random.default_rng(1)
    params = _f32(_tree(rng))
    grads = [_f32(_tree(rng)) for _ in range(4)]
    tx = redreg(LABELS, window=2, **kwargs)
    outs, states, _ = _drive(tx, params, grads, [signals] * 4)
    for o, g, s in zip(outs, grads, states, strict=True):
        chex.assert_trees_all_equal(o, g)
        assert float(s.beta["a"]) == 0.0 and float(s.beta["v"]) == 0.0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    pa=st.floats(0.0, 1.0),
    pv=st.floats(0.0, 1.0),
    sim=st.floats(-1.0, 1.0),
    projection=st.sampled_from(["per_tensor", "per_modality", "none", "scale"]),
)
def test_shared_and_non_dominant_leaves_are_never_changed(seed, pa, pv, sim, projection):
    rng = np.random.default_rng(seed)
    params = _f32(_tree(rng))
    grads = [_f32(_tree(rng)) for _ in range(3)]
    tx = redreg(LABELS, tau=0.0, window=1, projection=projection)
    sig = [_signals(probs=(pa, pv), red=tuple(rng.uniform(0.1, 2.0, 2)), sim=sim)] * 3
    outs, states, _ = _drive(tx, params, grads, sig)
    dominant = "a" if pa > pv else "v" if pv > pa else None
    for o, g, s in zip(outs, grads, states, strict=True):
        chex.assert_trees_all_equal(o["head"], g["head"])  # shared leaves: bit for bit
        for m in ("a", "v"):
            if m != dominant:
                chex.assert_trees_all_equal(o["enc"][m], g["enc"][m])
                assert float(s.beta[m]) == 0.0


def test_all_leaves_of_the_dominant_modality_change_when_suppressing():
    _, grads, outs, states, _ = _suppressing_run("per_tensor")
    assert float(states[-1].beta["a"]) > 1.0
    for k in ("w", "b"):
        assert not np.array_equal(
            np.asarray(outs[-1]["enc"]["a"][k]), np.asarray(grads[-1]["enc"]["a"][k])
        )


# ----------------------------------------------------------------------------- state sequence


class _ReferenceMonitor:
    """The reference code's per-step monitor, written with Python lists (main_RedReg.py)."""

    def __init__(self, window, momentum, gamma, trigger, beta_scale, eps=1e-12):
        self.w, self.mom, self.gamma, self.trigger, self.bs, self.eps = (
            window,
            momentum,
            gamma,
            trigger,
            beta_scale,
            eps,
        )
        self.reset()

    def reset(self):
        self.hist = {"a": [], "v": []}
        self.ema = {"a": 0.0, "v": 0.0}

    def growth(self, hist):
        if len(hist) <= self.w:
            return 1.0
        s1 = sum(hist[-self.w :]) / self.w
        s2 = sum(hist[-self.w - 1 : -1]) / self.w
        return (s1 - s2) / (abs(s2) + self.eps)

    def step(self, p, red, sim, tau):
        out = {"S": {}, "r": {}, "ema": {}}
        for m in ("a", "v"):
            self.hist[m].append(p[m])
            s = self.growth(self.hist[m])
            self.ema[m] = self.mom * self.ema[m] + (1 - self.mom) * red[m]
            r = red[m] / (self.ema[m] + self.eps) - self.gamma * max(s, 0.0)
            out["S"][m], out["r"][m], out["ema"][m] = s, r, self.ema[m]
        beta = {"a": 0.0, "v": 0.0}
        if p["a"] < p["v"] and out["r"]["v"] > self.trigger:
            beta["v"] = math.exp(self.bs * math.tanh(max(p["v"] - p["a"], 0.0)))
        elif p["v"] < p["a"] and out["r"]["a"] > self.trigger:
            beta["a"] = math.exp(self.bs * math.tanh(max(p["a"] - p["v"], 0.0)))
        gate = 1.0 if sim >= tau else 0.0
        out["beta"] = {m: b * gate for m, b in beta.items()}
        out["gate"] = gate
        return out


def test_state_sequence_follows_the_reference_loop_with_period_resets():
    window, period, total = 2, 4, 9
    rng = np.random.default_rng(3)
    params = _f32(_tree(rng))
    grads = [_f32(_tree(rng)) for _ in range(total)]
    p_seq = [{"a": 0.3 + 0.05 * t + 0.02 * (t % 3), "v": 0.35 + 0.01 * t} for t in range(total)]
    red_seq = [{"a": 1.0 + 0.1 * t, "v": 2.0 - 0.05 * t} for t in range(total)]
    sim_seq = [0.3 + 0.02 * t for t in range(total)]
    tau = tau_linear(total)
    tx = redreg(LABELS, total_steps=total, window=window, reset_every=period, gamma=0.6)
    sig = [
        {"probs": p, "sensitivity": r, "similarity": s}
        for p, r, s in zip(p_seq, red_seq, sim_seq, strict=True)
    ]
    _, states, params_seq = _drive(tx, params, grads, sig)

    ref = _ReferenceMonitor(window, 0.9, 0.6, 0.15, 0.9)
    for t in range(total):
        if t % period == 0:
            ref.reset()  # the reference code's histories and EMAs are local to an epoch
            anchor = params_seq[t]
        tau_t = 0.2 + 0.3 * t / (total - 1)
        assert float(states[t].tau) == pytest.approx(tau_t, rel=1e-6)
        assert float(tau(t)) == pytest.approx(tau_t, rel=1e-6)
        want = ref.step(p_seq[t], red_seq[t], sim_seq[t], tau_t)
        s = states[t]
        for m in ("a", "v"):
            assert float(s.growth[m]) == pytest.approx(want["S"][m], rel=1e-5, abs=1e-6)
            assert float(s.ema[m]) == pytest.approx(want["ema"][m], rel=1e-6)
            assert float(s.score[m]) == pytest.approx(want["r"][m], rel=1e-5, abs=1e-5)
            assert float(s.beta[m]) == pytest.approx(want["beta"][m], rel=1e-6)
            # the window holds the last window + 1 values of p since the reset
            n = min(t % period + 1, window + 1)
            recent = [p_seq[k][m] for k in range(t - n + 1, t + 1)]
            np.testing.assert_allclose(np.asarray(s.history[m])[-n:], recent, rtol=1e-6)
        assert float(s.gate) == want["gate"]
        assert int(s.history_len) == min(t % period + 1, window + 1)
        chex.assert_trees_all_close(s.anchor["enc"], anchor["enc"])
        assert isinstance(s.anchor["head"]["w"], optax.MaskedNode)
    # at least one step of each kind, so the comparison exercised both branches
    betas = [float(s.beta["a"]) + float(s.beta["v"]) for s in states]
    assert min(betas) == 0.0 and max(betas) > 1.0


def test_first_steps_by_hand():
    """Step 0: S = 1, EMA = 0.1 red, r = red / (0.1 red) - 0.6 = 9.4; beta = e^{0.9 tanh 0.4}."""
    params = _f32(_tree(np.random.default_rng(0)))
    tx = redreg(LABELS, tau=0.25, window=10)
    state = tx.init(params)
    g = jax.tree.map(jnp.ones_like, params)
    _, state = tx.update(g, state, params, **_signals(probs=(0.7, 0.3), red=(2.0, 4.0), sim=0.3))
    assert float(state.growth["a"]) == 1.0
    assert float(state.ema["a"]) == pytest.approx(0.2)
    assert float(state.ema["v"]) == pytest.approx(0.4)
    assert float(state.score["a"]) == pytest.approx(9.4, rel=1e-6)
    assert float(state.beta["a"]) == pytest.approx(math.exp(0.9 * math.tanh(0.4)), rel=1e-6)
    assert int(state.dominant) == 0 and float(state.gate) == 1.0
    # Step 1: EMA = 0.9 * 0.2 + 0.1 * 1.0 = 0.28, r = 1 / 0.28 - 0.6.
    _, state = tx.update(g, state, params, **_signals(probs=(0.7, 0.3), red=(1.0, 4.0), sim=0.2))
    assert float(state.ema["a"]) == pytest.approx(0.28)
    assert float(state.score["a"]) == pytest.approx(1 / 0.28 - 0.6, rel=1e-6)
    assert float(state.gate) == 0.0 and float(state.beta["a"]) == 0.0


def test_three_modalities_dominance_and_gap_rule():
    rng = np.random.default_rng(5)
    params = {m: jnp.asarray(rng.normal(size=(3,)), jnp.float32) for m in ("a", "b", "c")}
    labels = {"a": "a", "b": "b", "c": "c"}
    tx = redreg(labels, tau=0.5)
    state = tx.init(params)
    g = {m: jnp.asarray(rng.normal(size=(3,)), jnp.float32) for m in params}
    probs = {"a": 0.2, "b": 0.7, "c": 0.4}
    sims = {"a": 0.9, "b": 0.6, "c": 0.1}  # the dominant modality's entry decides
    _, state = tx.update(
        g, state, params, probs=probs, sensitivity=dict.fromkeys(probs, 1.0), similarity=sims
    )
    assert int(state.dominant) == 1 and float(state.gate) == 1.0
    assert float(state.beta["b"]) == pytest.approx(math.exp(0.9 * math.tanh(0.7 - 0.3)), rel=1e-6)
    assert float(state.beta["a"]) == 0.0 and float(state.beta["c"]) == 0.0
    sims["b"] = 0.4
    _, state = tx.update(
        g, state, params, probs=probs, sensitivity=dict.fromkeys(probs, 1.0), similarity=sims
    )
    assert float(state.gate) == 0.0 and float(state.beta["b"]) == 0.0


def test_ablation_modes():
    rng = np.random.default_rng(7)
    params = _f32(_tree(rng))
    grads = [_f32(_tree(rng)) for _ in range(3)]
    sig = [_signals()] * 3
    d_steps = {}
    for projection in ("none", "scale"):
        tx = redreg(LABELS, tau=0.0, window=2, projection=projection)
        outs, states, params_seq = _drive(tx, params, grads, sig)
        beta = float(states[2].beta["a"])
        g = np.asarray(grads[2]["enc"]["a"]["w"])
        got = np.asarray(outs[2]["enc"]["a"]["w"])
        d = np.asarray(params_seq[2]["enc"]["a"]["w"] - params["enc"]["a"]["w"])
        want = g + beta * d if projection == "none" else g / (1 + beta)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        d_steps[projection] = got
    # no monitor: fires although the trigger is out of reach; no gate: fires with sim < tau
    for kwargs, signals in (
        (
            {"use_monitor": False, "trigger": 1e9, "tau": 0.0},
            {k: v for k, v in _signals().items() if k != "sensitivity"},
        ),
        (
            {"use_gate": False, "tau": 0.99},
            {k: v for k, v in _signals().items() if k != "similarity"},
        ),
    ):
        tx = redreg(LABELS, window=2, **kwargs)
        _, states, _ = _drive(tx, params, grads, [signals] * 3)
        assert float(states[-1].beta["a"]) > 1.0


# ----------------------------------------------------------------------------- integration


def test_jit_equals_eager_and_works_inside_chain():
    rng = np.random.default_rng(11)
    params = _f32(_tree(rng))
    grads = [_f32(_tree(rng)) for _ in range(4)]
    sig = [_signals(probs=(0.6 + 0.02 * t, 0.3)) for t in range(4)]
    tx = optax.chain(
        redreg(_labels_fn, tau=0.0, window=2),
        optax.add_decayed_weights(1e-4),
        optax.sgd(0.1, momentum=0.9),
    )

    def run(update):
        state, p, outs = tx.init(params), params, []
        for g, s in zip(grads, sig, strict=True):
            u, state = update(g, state, p, **s)
            p = optax.apply_updates(p, u)
            outs.append(u)
        return outs, state

    eager, s_eager = run(tx.update)
    jitted, s_jit = run(jax.jit(tx.update))
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(s_eager[0].beta, s_jit[0].beta, rtol=1e-6)
    assert float(s_jit[0].beta["a"]) > 1.0


def test_nnx_optimizer_update_with_extra_args_matches_manual_update():
    from redundax.models.fusion import encoder_labels, mlp_fusion

    model = mlp_fusion({"a": (4,), "v": (6,)}, 3, hidden=5, features=4, rngs=nnx.Rngs(0))
    tx = optax.chain(redreg(encoder_labels, tau=0.0, window=2), optax.sgd(0.1))
    x = {"a": jnp.ones((8, 4)), "v": jnp.linspace(-1, 1, 48).reshape(8, 6)}
    y = jnp.arange(8) % 3

    def loss(m):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(m(x).logits, y))

    params = nnx.state(model, nnx.Param)
    state = tx.init(params)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for t in range(3):
        sig = _signals(probs=(0.7, 0.2 + 0.01 * t))
        grads = nnx.grad(loss)(model)
        u, state = tx.update(nnx.state(grads, nnx.Param), state, params, **sig)
        params = optax.apply_updates(params, u)
        optimizer.update(model, grads, **sig)
    chex.assert_trees_all_close(
        jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(params), rtol=1e-6
    )
    assert float(optimizer.opt_state[0].beta["a"][...]) > 1.0


SHARDED_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
from redundax.transforms import redreg
assert jax.device_count() == 8, jax.device_count()
rng = np.random.default_rng(0)
params = {"enc": {"a": {"w": rng.normal(size=(16, 8)), "b": rng.normal(size=(8,))},
                  "v": {"w": rng.normal(size=(8, 24))}},
          "head": {"w": rng.normal(size=(32, 4))}}
params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params) for _ in range(4)]
labels = {"enc": {"a": {"w": "a", "b": "a"}, "v": {"w": "v"}}, "head": {"w": None}}
mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
spec = {"enc": {"a": {"w": P("data"), "b": P("data")}, "v": {"w": P(None, "data")}}, "head": {"w": P("data")}}
shard = lambda tree: jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), tree, spec,
                                  is_leaf=lambda s: isinstance(s, P))
def run(params, grads, projection):
    tx = optax.chain(redreg(labels, tau=0.0, window=2, projection=projection), optax.sgd(0.1))
    update = jax.jit(tx.update)
    state, p, outs = jax.jit(tx.init)(params), params, []
    for t, g in enumerate(grads):
        u, state = update(g, state, p, probs={"a": 0.6 + 0.02 * t, "v": 0.3},
                          sensitivity={"a": 1.0, "v": 1.0}, similarity=0.9)
        p = optax.apply_updates(p, u)
        outs.append(u)
    return p, outs, state
out = {}
for projection in ("per_tensor", "per_modality"):
    one = jax.devices()[0]
    p1, o1, s1 = run(jax.device_put(params, one), jax.device_put(grads, one), projection)
    p8, o8, s8 = run(shard(params), [shard(g) for g in grads], projection)
    assert len(p8["enc"]["a"]["w"].sharding.device_set) == 8
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves((p1, o1)), jax.tree.leaves((p8, o8))))
    out[projection] = {"diff": diff, "beta": float(s8[0].beta["a"])}
print(json.dumps(out))
"""


def test_sharded_8_devices_equals_single_device():
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for projection, r in out.items():
        assert r["beta"] > 1.0, projection
        assert r["diff"] <= 1e-5, (projection, r)


# ----------------------------------------------------------------------------- errors


def test_bad_arguments_raise_clear_errors():
    params = _f32(_tree(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="projection"):
        redreg(LABELS, tau=0.0, projection="sideways")
    with pytest.raises(ValueError, match="total_steps"):
        redreg(LABELS)
    with pytest.raises(ValueError, match="at least two modalities"):
        redreg(jax.tree.map(lambda _: "a", params), tau=0.0).init(params)
    with pytest.raises(ValueError, match="param_labels"):
        redreg({"enc": "a"}, tau=0.0).init(params)
    tx = redreg(LABELS, tau=0.0)
    state = tx.init(params)
    with pytest.raises(ValueError, match="probs"):
        tx.update(params, state, params, sensitivity={"a": 1, "v": 1}, similarity=1.0)
    with pytest.raises(ValueError, match="exactly the modality keys"):
        tx.update(
            params,
            state,
            params,
            probs={"a": 0.1, "x": 0.2},
            sensitivity={"a": 1, "v": 1},
            similarity=1.0,
        )
    with pytest.raises(ValueError, match="sensitivity"):
        tx.update(params, state, params, probs={"a": 0.1, "v": 0.2}, similarity=1.0)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, state, None, **_signals())


# ----------------------------------------------------------------------------- signals


def test_cross_modal_similarity_closed_form():
    z_a = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    z_v = jnp.array([[1.0, 1.0], [0.0, -3.0]])
    sim = cross_modal_similarity({"a": z_a, "v": z_v})
    want = (1 / math.sqrt(2) + -1.0) / 2
    assert float(sim["a"]) == pytest.approx(want) and float(sim["v"]) == pytest.approx(want)
    z_c = jnp.array([[0.0, 1.0], [0.0, 1.0]])  # cos with a: 0, 1; with v: 1/sqrt2, -1
    sim3 = cross_modal_similarity({"a": z_a, "v": z_v, "c": z_c})
    assert float(sim3["c"]) == pytest.approx(((0 + 1) / 2 + (1 / math.sqrt(2) - 1) / 2) / 2)
    with pytest.raises(ValueError, match="one shape"):
        cross_modal_similarity({"a": z_a, "v": jnp.ones((2, 3))})


def test_perturbation_sensitivity_closed_forms():
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (64, 10))
    # f(x) = c x: every realised difference is scaled by c, so the ratio is exactly c^2.
    assert float(perturbation_sensitivity(lambda v: 3.0 * v, x, key)) == pytest.approx(
        9.0, rel=1e-5
    )
    # A linear map A: E||(e1 - e2) A||^2 / d_out over E||e1 - e2||^2 / d_in -> ||A||_F^2 / d_out.
    a = jax.random.normal(jax.random.key(2), (10, 5))
    x = jax.random.normal(jax.random.key(3), (20000, 10))
    got = float(perturbation_sensitivity(lambda v: v @ a, x, key, sigma=0.1))
    assert got == pytest.approx(float(jnp.sum(a**2)) / 5, rel=0.03)
    # clipping: a constant input outside the range gives identical views -> 0 / (0 + eps) = 0.
    assert (
        float(perturbation_sensitivity(lambda v: v, jnp.full((4, 3), 5.0), key, clip=(0.0, 1.0)))
        == 0.0
    )
    with pytest.raises(ValueError, match="sigma"):
        perturbation_sensitivity(lambda v: v, x, key, sigma=0.0)
