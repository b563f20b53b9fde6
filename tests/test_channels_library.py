"""The channel-pruning library pieces on their own, against independent references: the method
registry (`redundax.prune.methods`) against hand-computed scores, the lesion probe
(`redundax.prune.lesion`) against brute-force masked evaluation in NumPy and hand rank
correlations, and pruning curves and their summary (`redundax.prune.curves`) against MACs of the
physically shrunk networks and hand trapezoids."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from redundax import prune
from redundax.models.vgg import VGG
from redundax.prune import channels as pc
from redundax.prune import flops, lesion
from redundax.prune import graph as G


def vgg():
    model = VGG(10, in_channels=1, cfg=(8, "M", 16, 16, "M", 16), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(3)
    for _, mod in nnx.iter_modules(model):
        if isinstance(mod, nnx.BatchNorm):
            n = mod.num_features
            mod.scale.set_value(jnp.asarray(rng.normal(size=n) + 1, jnp.float32))
            mod.bias.set_value(jnp.asarray(rng.normal(size=n), jnp.float32))
    return model


def images(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 1)).astype(np.float32)


def fake_metrics(graph, seed=0):
    rng = np.random.default_rng(seed)
    names = ("ix", "rx", "compact", "task_mi", "red_t", "syn", "conv_mean", "conv_second")
    return {u: {k: rng.random(w) for k in names} for u, w in G.unit_channels(graph).items()}


def numpy_loss(model, x, y):
    """Mean cross-entropy of eval-mode logits, in float64 NumPy."""
    z = np.asarray(nnx.view(model, use_running_average=True)(jnp.asarray(x)), np.float64)
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def rank_corr(a, b):
    """Spearman's rho without ties: Pearson correlation of the ranks."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# ---------------------------------------------------------------------------------- methods


def test_method_registry_against_hand_scores():
    model = vgg()
    g = G.channel_graph(model)
    per = fake_metrics(g)
    inputs = prune.ScoreInputs(model, g, per, (images(8, 1), np.arange(8) % 10), seed=5)
    names = ("magnitude", "random", "bn_scale", "ix", "composite_ix", "composite_pid")
    out = prune.method_scores(names, inputs)
    assert list(out) == list(names)
    u = g.units[1]
    k = np.asarray(G.get_path(model, u.conv).kernel[...])
    want = [np.linalg.norm(k[..., i]) for i in range(k.shape[-1])]
    np.testing.assert_allclose(out["magnitude"][u.name], want, rtol=1e-5)
    np.testing.assert_allclose(
        out["bn_scale"][u.name], np.abs(np.asarray(G.get_path(model, u.bn).scale[...]))
    )
    rng = np.random.default_rng(5)  # random: one uniform draw per unit, in unit order
    for v in g.units:
        np.testing.assert_array_equal(out["random"][v.name], rng.random(len(per[v.name]["ix"])))
    z = lambda v: (v - v.mean()) / v.std()
    m = per[u.name]
    np.testing.assert_array_equal(out["ix"][u.name], m["ix"])
    np.testing.assert_allclose(out["composite_ix"][u.name], 2 * z(m["ix"]) - 0.25 * z(m["rx"]))
    np.testing.assert_allclose(
        out["composite_pid"][u.name],
        2 * z(m["task_mi"]) - 0.25 * z(m["red_t"]) + 0.25 * z(m["syn"]),
    )
    assert set(prune.METHODS) == set(pc.BASELINE_METHODS + pc.LOCAL_METHODS + pc.TARGET_METHODS)
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune.method_scores(["magnitude", "l1"], inputs)


# ---------------------------------------------------------------------------------- lesions


def test_lesion_summary_against_hand_rank_correlations():
    rows = []
    rng = np.random.default_rng(0)
    for unit in ("a", "b"):
        for c in range(6):
            rows.append({"unit": unit, "channel": c, "damage": float(rng.random()),
                         "replace_damage": float(rng.random() * 0.5), "peer_r2": float(rng.random()),
                         **{k: float(rng.random()) for k in ("ix", "task_mi", "compact", "rx")}})  # fmt: skip
    out = lesion.summarise(rows, threshold=0.2)
    rho = []
    for unit in ("a", "b"):
        sub = [r for r in rows if r["unit"] == unit]
        rho.append(rank_corr([-r["ix"] for r in sub], [-r["damage"] for r in sub]))
    assert np.isclose(out["spearman_with_lower_damage"]["-I_X"], np.mean(rho))
    big = [r for r in rows if r["damage"] > 0.2]
    rec = [(r["damage"] - r["replace_damage"]) / r["damage"] for r in big]
    rep = out["replacement"]
    assert rep["n"] == len(big) and np.isclose(rep["median_recovery"], np.median(rec))
    assert np.isclose(rep["peer_helps"], np.mean(np.asarray(rec) > 0))
    assert np.isclose(rep["rho_peer_r2_recovery"], rank_corr([r["peer_r2"] for r in big], rec))


def test_lesion_probe_damage_is_brute_force_masking():
    model = vgg()
    g = G.channel_graph(model)
    x, y = images(24, 2), (np.arange(24) % 10).astype(np.int32)
    per = fake_metrics(g)
    for u in g.units:  # a valid calibration covariance for peer replacement
        w = len(per[u.name]["ix"])
        a = np.random.default_rng(1).normal(size=(50, w))
        per[u.name]["cov"], per[u.name]["conv_mean"] = np.cov(a, rowvar=False), a.mean(0)
    out = prune.lesion_probe(model, g, per, x, y, layers=2, channels=3, peers=4,
                             threshold=1e-3, rng=np.random.default_rng(4))  # fmt: skip
    units = lesion.lesion_units(g, 2)
    assert [u.name for u in units] == [g.units[0].name, g.units[-1].name]  # first and last
    assert len(out["rows"]) == 6
    base = numpy_loss(model, x, y)
    for r in out["rows"]:
        masks = G.full_masks(g)
        masks[r["unit"]][r["channel"]] = False
        want = numpy_loss(G.apply_masks(nnx.clone(model), g, masks), x, y) - base
        assert np.isclose(r["damage"], want, atol=2e-5)
        m = per[r["unit"]]
        rep, _ = pc.peer_replacement(model, g, r["unit"], r["channel"], m["cov"],
                                     m["conv_mean"], peers=4)  # fmt: skip
        assert np.isclose(r["replace_damage"], numpy_loss(rep, x, y) - base, atol=2e-5)
        assert r["ix"] == float(m["ix"][r["channel"]])


# ---------------------------------------------------------------------------------- curves


def test_pruning_curves_against_shrunk_networks_and_given_accuracies():
    model = vgg()
    g = G.channel_graph(model)
    fm = flops.flops_model(model, g, (8, 8, 1))
    scores = prune.method_scores(["magnitude", "random"], prune.ScoreInputs(model, g, {}, None))
    accuracy = {"magnitude_s0.2": 0.8, "magnitude_s0.6": 0.4, "random_s0.2": 0.6,
                "random_s0.6": 0.2}  # fmt: skip
    seen = []

    def recover(key, masks):
        seen.append(key)
        return accuracy[key]

    curves = prune.pruning_curves(model, g, fm, scores, sparsities=(0.2, 0.6), recover=recover,
                                  base_accuracy=0.8)  # fmt: skip
    assert seen == list(accuracy)
    full = flops.macs(model, (8, 8, 1))
    for meth in ("magnitude", "random"):
        c = curves[meth]
        np.testing.assert_allclose(c["retention"], [accuracy[f"{meth}_s{s}"] / 0.8
                                                    for s in (0.2, 0.6)])  # fmt: skip
        for s, x, macs in zip((0.2, 0.6), c["flops_pruned"], c["macs"], strict=True):
            masks = pc.global_threshold_masks(g, scores[meth], s)
            small = flops.macs(pc.shrink(model, g, masks)[0], (8, 8, 1))
            assert macs == small and np.isclose(x, 1 - small / full)
    stop = lambda key, masks: None if key == "random_s0.2" else 1.0
    assert prune.pruning_curves(model, g, fm, scores, sparsities=(0.2,), recover=stop,
                                base_accuracy=1.0) is None  # fmt: skip


def test_summarise_auc_and_best_methods_by_hand():
    def run(seed, shift):
        curves = {
            "magnitude": {"flops_pruned": [0.2, 0.6], "retention": [0.9, 0.5]},
            "ix": {"flops_pruned": [0.1, 0.7], "retention": [1.0, 0.7 + shift]},
            "task_mi": {"flops_pruned": [0.2, 0.8], "retention": [0.8, 0.4]},
        }
        align = dict.fromkeys(prune.curves.ALIGNMENT_KEYS, 0.5)
        return {"seed": seed, "curves": curves, "test_accuracy": 0.9, "alignment": align}

    out = prune.summarise([run(0, 0.0), run(1, 0.1)], ["magnitude", "ix", "task_mi"], n_boot=50)
    # common interval [0.2, 0.6]; each curve is linear there: AUC = the mean of its two ends
    ix = lambda s: np.interp([0.2, 0.6], [0.1, 0.7], [1.0, 0.7 + s]).mean()
    assert np.isclose(out["auc_mean"]["magnitude"], 0.7)
    assert np.isclose(out["auc_mean"]["ix"], (ix(0.0) + ix(0.1)) / 2)
    assert np.isclose(
        out["auc_mean"]["task_mi"], np.interp([0.2, 0.6], [0.2, 0.8], [0.8, 0.4]).mean()
    )
    assert out["best_local"] == "ix" and out["best_target"] == "task_mi"
    assert out["best_baseline"] == "magnitude"
    assert np.isclose(out["auc_sem"]["ix"], abs(ix(0.0) - ix(0.1)) / 2 / np.sqrt(2))
    assert "latency" not in out and out["test_accuracy"] == 0.9
    assert out["alignment"] == dict.fromkeys(prune.curves.ALIGNMENT_KEYS, 0.5)
