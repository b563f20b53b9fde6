"""Channel pruning: masks, physical shrinking, lesions, peer replacement, scores, AUC."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from redundax.models.mobilenet import MobileNetV2
from redundax.models.resnet import ResNet
from redundax.models.vgg import VGG
from redundax.prune import channels as pc
from redundax.prune import flops
from redundax.prune import graph as G
from redundax.regularizers import conv_outputs
from tests import processes


def randomize_bn(model, seed):
    rng = np.random.default_rng(seed)
    for _, mod in nnx.iter_modules(model):
        if isinstance(mod, nnx.BatchNorm):
            n = mod.num_features
            mod.scale.set_value(jnp.asarray(rng.normal(size=n) + 1, jnp.float32))
            mod.bias.set_value(jnp.asarray(rng.normal(size=n), jnp.float32))
            mod.mean.set_value(jnp.asarray(rng.normal(size=n) * 0.1, jnp.float32))
            mod.var.set_value(jnp.asarray(rng.random(n) + 0.5, jnp.float32))
    return model


def tiny_models():
    r = nnx.Rngs(0)
    return {
        "resnet": ResNet(10, in_channels=1, widths=(8, 16), blocks=(2, 1), rngs=r),
        "vgg": VGG(10, in_channels=1, cfg=(8, "M", 16, 16, "M", 16), rngs=r),
        # width 0.5: a t=1 block on a residual stream (depthwise "follow" space) and expansions
        "mobilenet": MobileNetV2(
            10,
            in_channels=1,
            width=0.5,
            last_channels=16,
            settings=((1, 16, 1, 1), (6, 8, 2, 2)),
            rngs=r,
        ),
    }


def images(n=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 8, 8, 1)), jnp.float32)


def logits(model, x):
    return nnx.view(model, use_running_average=True)(x)


@pytest.mark.parametrize("name", ["resnet", "vgg", "mobilenet"])
def test_shrunk_model_equals_masked_model(name):
    model = randomize_bn(tiny_models()[name], 1)
    g = G.channel_graph(model)
    x = images()
    fm = flops.flops_model(model, g, (8, 8, 1))
    rng = np.random.default_rng(2)
    for trial in range(3):
        masks = {u: rng.random(w) < 0.6 for u, w in G.unit_channels(g).items()}
        if trial == 2:  # a whole residual stream channel dropped by every writer
            for u in g.units:
                if g.spaces[u.dst].rule == "union":
                    masks[u.name][0] = False
        masked = G.apply_masks(nnx.clone(model), g, masks)
        small, sg = pc.shrink(model, g, masks)
        np.testing.assert_allclose(logits(small, x), logits(masked, x), atol=2e-5, rtol=1e-5)
        assert flops.macs(small, (8, 8, 1), graph=sg) == flops.count_macs(fm, g, masks)["total"]
        assert flops.count_params(small) < flops.count_params(model)
    # pruning changes the function (the test above is not vacuous)
    assert not np.allclose(logits(masked, x), logits(model, x))


def test_shrink_keeps_one_zero_channel_of_an_emptied_space():
    """A depthwise (intersect) space that loses every channel: the expansion and the depthwise conv
    keep each a different channel, so none survives both. The shrunk network keeps one all-zero
    channel there (a conv cannot have zero outputs) and still equals the masked network."""
    model = randomize_bn(tiny_models()["mobilenet"], 5)
    g = G.channel_graph(model)
    x = images()
    hidden = next(u.dst for u in g.units if g.spaces[u.dst].rule == "intersect")
    expand, dw = g.writers(hidden)
    masks = G.full_masks(g)
    masks[expand.name][:] = False
    masks[expand.name][0] = True
    masks[dw.name][:] = False
    masks[dw.name][1] = True
    assert not G.alive(g, masks)[hidden].any()
    small, _ = pc.shrink(model, g, masks)
    assert G.get_path(small, dw.conv).kernel[...].shape[-1] == 1
    masked = G.apply_masks(nnx.clone(model), g, masks)
    np.testing.assert_allclose(logits(small, x), logits(masked, x), atol=2e-5, rtol=1e-5)
    fm = flops.flops_model(model, g, (8, 8, 1))
    assert flops.macs(small, (8, 8, 1)) == flops.count_macs(fm, g, masks)["total"]


def test_global_threshold_brute_force():
    model = tiny_models()["vgg"]
    g = G.channel_graph(model)
    rng = np.random.default_rng(0)
    scores = {u: rng.random(w) for u, w in G.unit_channels(g).items()}
    flat = np.concatenate([scores[n] for n in g.names])
    for s in pc.SPARSITIES[:-1]:
        m = pc.global_threshold_masks(g, scores, s)
        kept = np.concatenate([m[n] for n in g.names])
        k = int(np.floor(s * flat.size))
        assert (~kept).sum() == k
        assert flat[~kept].max() < flat[kept].min()
    m = pc.global_threshold_masks(g, scores, 0.95, min_keep=2)
    assert all(v.sum() >= 2 for v in m.values())
    assert len(pc.SPARSITIES) == 10 and pc.SPARSITIES[0] == 0.1 and pc.SPARSITIES[-1] == 0.95
    with pytest.raises(ValueError, match="sparsity"):
        pc.global_threshold_masks(g, scores, 1.0)
    with pytest.raises(ValueError, match="lacks units"):
        pc.global_threshold_masks(g, {}, 0.5)


def numpy_loss(model, x, y):
    """Mean cross-entropy of eval-mode logits over the whole split, in float64 NumPy."""
    z = np.asarray(logits(model, jnp.asarray(x)), np.float64)
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


@pytest.mark.parametrize("batch_size", [8, 5, 64])  # 8 does not divide 20; 64 > the split
def test_lesion_damage_brute_force(batch_size):
    """Each lesion: a copy of the model with the channel's BN scale and bias zeroed by hand, its
    loss on the whole split in NumPy, minus the intact model's."""
    model = randomize_bn(tiny_models()["vgg"], 3)
    g = G.channel_graph(model)
    x = np.asarray(images(20, 1))
    y = np.arange(20) % 10
    unit = g.names[1]
    dmg = pc.lesion_damage(model, g, unit, [0, 5, 0], x, y, batch_size=batch_size)
    base = numpy_loss(model, x, y)
    want = []
    for c in (0, 5, 0):
        copy = nnx.clone(model)
        bn = G.get_path(copy, g.unit(unit).bn)
        for var in (bn.scale, bn.bias):
            v = np.array(var[...])
            v[c] = 0.0
            var.set_value(jnp.asarray(v))
        want.append(numpy_loss(copy, x, y) - base)
    assert np.abs(want).min() > 1e-3  # the lesions change the loss
    np.testing.assert_allclose(dmg, want, atol=2e-5)
    with pytest.raises(ValueError, match="channels"):
        pc.lesion_damage(model, g, unit, [99], x, y)


def test_peer_replacement_is_the_ridge_reconstruction():
    model = randomize_bn(tiny_models()["vgg"], 4)
    g = G.channel_graph(model)
    u = g.unit(g.names[2])
    x = images(32, 2)
    _, (act,) = conv_outputs(nnx.view(model, use_running_average=True), x, [u.conv])
    a = np.asarray(act, np.float64).reshape(-1, act.shape[-1])
    cov, mean = np.cov(a, rowvar=False), a.mean(0)
    new, r2 = pc.peer_replacement(model, g, u.name, 3, cov, mean, peers=4, ridge=1e-3)
    # brute force: ridge regression of channel 3 on its 4 most correlated peers
    corr = np.corrcoef(a, rowvar=False)
    peers = [j for j in np.argsort(-np.abs(corr[3]), kind="stable") if j != 3][:4]
    ac = a - mean
    lam = 1e-3 * np.mean(np.diag(cov[np.ix_(peers, peers)]))
    n = len(a) - 1
    b = np.linalg.solve(
        ac[:, peers].T @ ac[:, peers] / n + lam * np.eye(4), ac[:, peers].T @ ac[:, 3] / n
    )
    recon = mean[3] + ac[:, peers] @ b
    _, (act_new,) = conv_outputs(nnx.view(new, use_running_average=True), x, [u.conv])
    got = np.asarray(act_new).reshape(-1, act.shape[-1])
    np.testing.assert_allclose(got[:, 3] - got[:, 3].mean(), recon - recon.mean(), atol=1e-3)
    np.testing.assert_allclose(np.delete(got, 3, 1), np.delete(a, 3, 1), atol=1e-5)
    # the intercept is absorbed by the BN running mean: BN input offset matches
    bn0, bn1 = G.get_path(model, u.bn), G.get_path(new, u.bn)
    shift = float(bn0.mean[...][3] - bn1.mean[...][3])
    assert np.isclose(shift, mean[3] - b @ mean[peers], atol=1e-4)
    resid = ac[:, 3] - ac[:, peers] @ b
    assert np.isclose(r2, 1 - resid.var() / ac[:, 3].var(), atol=1e-4)


def test_taylor_is_first_order_loss_change():
    """Per calibration batch, d/d eps of the batch's mean loss when the channel's BN output is
    scaled by (1 - eps), at eps = 0; the score is its absolute value averaged over the batches.
    Batch sizes 16 and 13 (13 pads to a multiple of the device count)."""
    model = randomize_bn(tiny_models()["vgg"], 6)
    g = G.channel_graph(model)
    batches = [(images(16, 3), jnp.arange(16) % 10), (images(13, 4), jnp.arange(13) % 7)]
    sc = pc.taylor_scores(model, g, batches)
    u = g.unit(g.names[1])
    gdef, state = nnx.split(nnx.view(model, use_running_average=True))

    def loss(eps, c, x, y):
        m = nnx.merge(gdef, state, copy=True)
        bn = G.get_path(m, u.bn)
        k = 1 - eps * (jnp.arange(bn.scale[...].shape[0]) == c)
        bn.scale.set_value(bn.scale[...] * k)
        bn.bias.set_value(bn.bias[...] * k)
        return pc.cross_entropy(m(x), y)

    for c in (0, 7):
        # d/d eps of scaling channel c's BN output by (1 - eps), per batch
        d = [abs(float(jax.grad(loss)(0.0, c, x, y))) for x, y in batches]
        assert np.isclose(sc[u.name][c], np.mean(d), rtol=1e-3, atol=1e-6)
    assert set(sc) == set(g.names)
    with pytest.raises(ValueError, match="batches"):
        pc.taylor_scores(model, g, [])
    with pytest.raises(ValueError, match="calibration batch 1"):
        pc.taylor_scores(model, g, [batches[0], (images(0, 1), jnp.arange(0))])


def test_weight_scores_and_activation_rms():
    model = randomize_bn(tiny_models()["vgg"], 7)
    g = G.channel_graph(model)
    u = g.units[1]
    k = np.asarray(G.get_path(model, u.conv).kernel[...])
    w = [k[..., i].ravel() for i in range(k.shape[-1])]
    np.testing.assert_allclose(
        pc.magnitude_scores(model, g)[u.name], [np.linalg.norm(v) for v in w], rtol=1e-5
    )
    np.testing.assert_allclose(
        pc.fpgm_scores(model, g)[u.name],
        [sum(np.linalg.norm(a - b) for b in w) for a in w],
        rtol=1e-4,
    )
    x = images(16, 4)
    _, acts = conv_outputs(nnx.view(model, use_running_average=True), x, [v.conv for v in g.units])
    flat = {
        v.name: np.asarray(t, np.float64).reshape(-1, t.shape[-1])
        for v, t in zip(g.units, acts, strict=True)
    }
    act = acts[1]
    a = flat[u.name]
    bn = G.get_path(model, u.bn)
    post = np.asarray(bn(jnp.asarray(act), use_running_average=True), np.float64).reshape(a.shape)
    rms = pc.activation_rms_scores(
        model,
        g,
        {k: v.mean(0) for k, v in flat.items()},
        {k: (v**2).mean(0) for k, v in flat.items()},
    )
    np.testing.assert_allclose(rms[u.name], np.sqrt((post**2).mean(0)), rtol=1e-4)


def test_flops_matched_auc_closed_form():
    curves = {
        "a": ([0.1, 0.5, 0.9], [1.0, 0.6, 0.2]),  # y = 1.1 - x
        "b": ([0.2, 0.8], [0.5, 0.5]),
    }
    auc, (lo, hi) = pc.flops_matched_auc(curves)
    assert (lo, hi) == (0.2, 0.8)
    assert np.isclose(auc["a"], 1.1 - 0.5) and np.isclose(auc["b"], 0.5)
    auc2, _ = pc.flops_matched_auc(curves, interval=(0.1, 0.5))
    assert np.isclose(auc2["a"], 1.1 - 0.3)


def test_information_scores_formulas():
    rng = np.random.default_rng(0)
    per = {"l": {k: rng.random(9) for k in ("ix", "rx", "compact", "task_mi", "red_t", "syn")}}
    s = pc.information_scores(per, alpha=2.0, gamma=0.25)
    z = lambda v: (v - v.mean()) / v.std()
    m = per["l"]
    np.testing.assert_allclose(s["composite_ix"]["l"], 2 * z(m["ix"]) - 0.25 * z(m["rx"]))
    np.testing.assert_allclose(
        s["composite_pid"]["l"], 2 * z(m["task_mi"]) - 0.25 * z(m["red_t"]) + 0.25 * z(m["syn"])
    )
    assert set(pc.LOCAL_METHODS) | set(pc.TARGET_METHODS) <= set(s)


def test_lesion_damage_and_taylor_on_eight_devices_equal_one_device():
    """tests/scripts/channel_scores_devices.py: the same lesions and Taylor scores on a data mesh
    of 8 simulated CPU devices and of 1, padded last batches included."""
    script = pathlib.Path(__file__).parent / "scripts" / "channel_scores_devices.py"
    run = processes.launch([str(script)], JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu")
    (out,) = processes.finish([run])
    assert "channel scores OK" in out, out[-3000:]
