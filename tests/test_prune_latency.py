"""Latency of shrunk networks: the timed program is the shrunk network (no timing assertions)."""

import collections

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
from redundax.prune import latency as L

IMAGE = (8, 8, 1)


def tiny(name):
    r = nnx.Rngs(0)
    return {
        "resnet": lambda: ResNet(10, in_channels=1, widths=(8, 16), blocks=(2, 1), rngs=r),
        "vgg": lambda: VGG(10, in_channels=1, cfg=(8, "M", 16, 16, "M", 16), rngs=r),
        "mobilenet": lambda: MobileNetV2(
            10,
            in_channels=1,
            width=0.5,
            last_channels=16,
            settings=((1, 16, 1, 1), (6, 8, 2, 2)),
            rngs=r,
        ),
    }[name]()


def random_masks(g, seed, keep=0.5):
    rng = np.random.default_rng(seed)
    return {u: rng.random(w) < keep for u, w in G.unit_channels(g).items()}


def depthwise_macs(fm, g, masks):
    per = flops.count_macs(fm, g, masks)
    return sum(per[u.name] for u in g.units if u.depthwise)


@pytest.mark.parametrize("name", ["resnet", "vgg", "mobilenet"])
def test_timed_program_is_the_shrunk_network(name):
    """The executable that is timed has the shrunk widths: its parameters have the kept channel
    counts, its conv/matmul MACs equal the hand count under the masks, and XLA's cost analysis
    of it is below the unpruned network's."""
    model = tiny(name)
    g = G.channel_graph(model)
    fm = flops.flops_model(model, g, IMAGE)
    masks = random_masks(g, 3)
    small, _ = pc.shrink(model, g, masks)
    b = 2
    prog, full = L.compile_forward(small, IMAGE, b), L.compile_forward(model, IMAGE, b)

    # parameters of the compiled executable: kernels with the kept channel counts (independent
    # hand construction from the masks: a space keeps the channels any writer keeps)
    kept = {k: int(v.sum()) for k, v in G.kept_channels(g, masks).items()}
    want = collections.Counter()
    for u in g.units:
        conv = G.get_path(model, u.conv)
        kh, kw = conv.kernel_size
        want[(kh, kw, 1 if u.depthwise else kept[u.src], kept[u.dst])] += 1
    got = collections.Counter(s for s in L.parameter_shapes(prog) if len(s) == 4 and s[0] != b)
    assert got == want
    assert (b, *IMAGE) in L.parameter_shapes(prog)

    # MACs of the ops in the timed program = hand count of the masked network (depthwise convs run
    # as shifted slices, not HLO convolutions, so they are left out on both sides)
    hand = flops.count_macs(fm, g, masks)["total"] - depthwise_macs(fm, g, masks)
    hand_full = flops.count_macs(fm, g)["total"] - depthwise_macs(fm, g, G.full_masks(g))
    assert L.program_macs(prog) == b * hand
    assert L.program_macs(full) == b * hand_full
    assert hand < 0.8 * hand_full  # the masks remove a real share of the work
    assert L.xla_flops(prog) < L.xla_flops(full)

    # the pruned-curve helper times exactly these programs
    out = L.pruned_latency(model, g, [masks], IMAGE, (1, 3), repeats=2, warmup=0)
    assert out["program_macs"] == [hand]
    assert set(out["ms"]) == {1, 3} and len(out["ms"][3]) == 1
    np.testing.assert_allclose(out["ratio"][1][0], out["ms"][1][0] / out["full_ms"][1])
    # the shrunk network computes what the masked one does (so its latency is the pruned model's)
    x = jax.random.normal(jax.random.key(1), (b, *IMAGE))
    masked = G.apply_masks(nnx.clone(model), g, masks)
    np.testing.assert_allclose(
        prog.compiled(prog.args[0], x),
        nnx.view(masked, use_running_average=True)(x),
        atol=2e-5,
        rtol=1e-5,
    )


def test_hlo_macs_closed_form():
    """Grouped conv with stride and a batched matmul: MACs against closed forms."""

    def f(x, k, a, w):
        y = jax.lax.conv_general_dilated(
            x,
            k,
            (2, 2),
            ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=2,
        )
        return y, jnp.einsum("bij,bjk->bik", a, w)

    args = (
        jnp.ones((3, 8, 8, 4)),
        jnp.ones((3, 3, 2, 6)),
        jnp.ones((5, 2, 7)),
        jnp.ones((5, 7, 9)),
    )
    text = jax.jit(f).lower(*args).as_text()
    conv = 3 * 4 * 4 * 6 * (3 * 3 * 2)  # out elements x kh kw C_in/groups
    dot = 5 * 2 * 9 * 7
    assert L.hlo_macs(text) == conv + dot


def test_hlo_macs_refuses_ops_in_called_functions():
    inner = jax.jit(lambda a, b: a @ b)
    text = (
        jax.jit(lambda a, b: inner(a, b) + inner(b, a))
        .lower(jnp.ones((3, 3)), jnp.ones((3, 3)))
        .as_text()
    )
    if "func.func private" not in text:
        pytest.skip("this jax inlines nested jit calls")
    with pytest.raises(ValueError, match="inlined"):
        L.hlo_macs(text)


class _Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self):
        self.log.append(self.name)
        return jnp.zeros(())


def test_time_programs_round_robin_and_medians():
    log = []
    ts = L.time_programs([_Recorder("a", log), _Recorder("b", log)], repeats=4, warmup=1)
    # warm-up round, then every repeat runs each program once, starting one program later
    assert log == ["a", "b"] + ["a", "b", "b", "a"] * 2
    for t in ts:
        assert t.repeats == 4 and 0 <= t.q25_ms <= t.median_ms <= t.q75_ms
    log.clear()
    L.time_programs([_Recorder(k, log) for k in "abc"], repeats=2, warmup=0, rotate=False)
    assert log == list("abcabc")
    # min_time_s: more rounds than `repeats` (never more than the cap), every one complete
    log.clear()
    (t,) = L.time_programs([_Recorder("a", log)], repeats=1, warmup=0, min_time_s=10.0)
    assert t.repeats == len(log) == L.MAX_REPEATS_FACTOR
    with pytest.raises(ValueError, match="repeats"):
        L.time_programs([], repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        L.time_programs([], repeats=1, warmup=-1)
    with pytest.raises(ValueError, match="batch_size"):
        L.compile_forward(tiny("vgg"), IMAGE, 0)
    with pytest.raises(ValueError, match="batch_sizes"):
        L.measure_latency([tiny("vgg")], IMAGE, ())
