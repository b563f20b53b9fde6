"""Benchmark: the cost of RedReg (and OGM-GE) inside an optimizer update.

The parameter tree is that of the RedReg paper's model: two ResNet-18 encoders (audio with a
one-channel stem, visual), a concat fusion head and two unimodal heads, 22.4M float32
parameters (`redundax.models.fusion.resnet18_fusion`, shapes only; random values). Timed, each
as one jitted update with donated parameters and optimizer state:

- `sgd`: the bare optimizer of the paper, L2 weight decay 1e-4 and SGD with momentum 0.9;
- `redreg+sgd`: `redreg` (per-tensor projection, suppression active) chained before it;
- `redreg(idle)+sgd`: the same with the co-information gate closed (``tau = 1`` above the
  similarity 0.9), so that nothing is suppressed: the cost of carrying RedReg along;
- `redreg(per_modality)+sgd`: the same with one projection over each encoder;
- `ogm+sgd`: `ogm_ge(noise=False)` chained before it: the modulation alone, no noise;
- `ogm_ge+sgd`: `ogm_ge` chained before it (the default: counter-hash bits, Box-Muller noise);
- `ogm_ge(fused_threefry)+sgd`: the same noise transform from Threefry-2x32 bits;
- `ogm_ge(inverse_cdf)+sgd`: ``normal="inverse_cdf"`` (``jax.random.normal`` of Threefry bits,
  the draws of earlier versions).

Ratios are against `sgd`. The kinds take turns, one update each per round, so that a change of
the machine's load hits all of them alike; the table gives the median wall time, the ratio of
medians, the interquartile range of the per-round ratios (each kind against the `sgd` update of
its own round) and the ratio of median process CPU times (``time.process_time``: the work done,
less sensitive than wall time to other processes on a shared machine). ``--prefer-vector-width
512`` compiles every update (SGD included) with XLA's ``xla_cpu_prefer_vector_width=512``
(AVX-512 CPUs: 16 float lanes instead of 8 for the arithmetic-bound noise).

A second comparison times the suppression step alone -- for every tensor of the dominant
encoder, ``g + beta (d - <d, g>/||g||² g)`` -- as the jitted `redreg` update (writing into its
donated gradient buffers, as inside a jitted training step) against a NumPy transcription of
the reference code's per-tensor loop, in alternation, after checking that both give the same
result.

    python benchmarks/redreg.py [--repeats 10] [--prefer-vector-width 512]
                                [--out benchmarks/results/redreg.json]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from redundax.models.fusion import encoder_labels, mlp_fusion, resnet18_fusion
from redundax.train import host_memory
from redundax.transforms import ogm_ge, redreg

SIGNALS = {
    "probs": {"audio": 0.7, "visual": 0.3},
    "sensitivity": {"audio": 1.0, "visual": 1.0},
    "similarity": 0.9,
    "scores": {"audio": 0.7, "visual": 0.3},
}


KINDS = (
    "sgd",
    "redreg+sgd",
    "redreg(idle)+sgd",
    "redreg(per_modality)+sgd",
    "ogm+sgd",
    "ogm_ge+sgd",
    "ogm_ge(fused_threefry)+sgd",
    "ogm_ge(inverse_cdf)+sgd",
)


def param_tree(seed: int = 0, *, tiny: bool = False) -> dict:
    """Random float32 arrays with the shapes of the paper's audio-visual ResNet-18 model (22.4M
    parameters), or of a two-encoder MLP fusion model with the same tree layout (``tiny``)."""
    if tiny:
        build = lambda: mlp_fusion({"audio": (16,), "visual": (24,)}, 6, rngs=nnx.Rngs(0))
    else:
        shapes = {"audio": (257, 188, 1), "visual": (1, 224, 224, 3)}
        build = lambda: resnet18_fusion(shapes, 6, rngs=nnx.Rngs(0))
    abstract = nnx.eval_shape(build)
    shapes_tree = nnx.as_pure(nnx.state(abstract, nnx.Param))
    leaves, treedef = jax.tree.flatten(shapes_tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten(
        [
            0.05 * jax.random.normal(k, x.shape, jnp.float32)
            for k, x in zip(keys, leaves, strict=True)
        ]
    )


def optimizer(kind: str) -> optax.GradientTransformation:
    base = [optax.add_decayed_weights(1e-4), optax.sgd(2e-3, momentum=0.9)]
    if kind == "sgd":
        return optax.chain(*base)
    if kind == "redreg+sgd":
        return optax.chain(redreg(encoder_labels, tau=0.0), *base)
    if kind == "redreg(idle)+sgd":
        return optax.chain(redreg(encoder_labels, tau=1.0), *base)
    if kind == "redreg(per_modality)+sgd":
        return optax.chain(redreg(encoder_labels, tau=0.0, projection="per_modality"), *base)
    if kind == "ogm+sgd":
        return optax.chain(ogm_ge(encoder_labels, noise=False), *base)
    if kind == "ogm_ge+sgd":
        return optax.chain(ogm_ge(encoder_labels), *base)
    if kind == "ogm_ge(fused_threefry)+sgd":
        return optax.chain(ogm_ge(encoder_labels, rng_impl="fused_threefry"), *base)
    if kind == "ogm_ge(inverse_cdf)+sgd":
        return optax.chain(ogm_ge(encoder_labels, normal="inverse_cdf"), *base)
    raise ValueError(kind)


def make_update(kind: str, params, grads, compiler_options: dict | None = None):
    """A jitted update of ``kind`` (donating parameters and state) and its warmed-up state."""
    tx = optimizer(kind)

    def update(p, s, g):
        u, s = tx.update(g, s, p, **SIGNALS)
        return optax.apply_updates(p, u), s

    options = {"compiler_options": compiler_options} if compiler_options else {}
    update = jax.jit(update, donate_argnums=(0, 1), **options)
    p = jax.tree.map(jnp.copy, params)
    s = jax.jit(tx.init)(p)
    for _ in range(3):  # compile and let the anchor drift
        p, s = update(p, s, grads)
    jax.block_until_ready((p, s))
    return update, [p, s]


def sample_updates(
    kinds, params, grads, repeats: int, compiler_options: dict | None = None
) -> dict[str, dict[str, list[float]]]:
    """Wall and process CPU seconds of ``repeats`` updates of each kind, in rounds: every round
    runs one update of each kind in turn, so that load changes hit all kinds alike."""
    runs = {kind: make_update(kind, params, grads, compiler_options) for kind in kinds}
    samples = {kind: {"wall": [], "cpu": []} for kind in kinds}
    for _ in range(repeats):
        for kind, (update, carry) in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            carry[0], carry[1] = update(carry[0], carry[1], grads)
            jax.block_until_ready(carry)
            samples[kind]["wall"].append(time.perf_counter() - wall)
            samples[kind]["cpu"].append(time.process_time() - cpu)
    return samples


def time_updates(kinds, params, grads, repeats: int) -> dict[str, float]:
    """Median wall seconds per update; the kinds take turns (:func:`sample_updates`)."""
    samples = sample_updates(kinds, params, grads, repeats)
    return {kind: statistics.median(s["wall"]) for kind, s in samples.items()}


def summarize(samples: dict[str, dict[str, list[float]]], reference: str = "sgd") -> dict:
    """Per kind: median wall seconds, ratio of medians to ``reference``, the 25th and 75th
    percentiles of the per-round ratios (round ``i`` of a kind over round ``i`` of the
    reference), and the ratio of median CPU seconds."""
    ref = samples[reference]
    rows = {}
    for kind, s in samples.items():
        per_round = np.asarray(s["wall"]) / np.asarray(ref["wall"])
        rows[kind] = {
            "seconds": statistics.median(s["wall"]),
            "ratio_vs_sgd": statistics.median(s["wall"]) / statistics.median(ref["wall"]),
            "ratio_p25": float(np.percentile(per_round, 25)),
            "ratio_p75": float(np.percentile(per_round, 75)),
            "cpu_seconds": statistics.median(s["cpu"]),
            "cpu_ratio_vs_sgd": statistics.median(s["cpu"]) / statistics.median(ref["cpu"]),
        }
    return rows


def numpy_suppression(params, anchor, grads, betas: dict, labels: dict) -> dict:
    """The reference code's loop, in NumPy: the projected drift of every tensor, added with the
    tensor's modality's beta (0 for the non-dominant encoder; heads untouched)."""
    out = {}
    for name, p in params.items():
        d = p - anchor[name]
        g = grads[name]
        if not np.any(g):
            d_safe = d
        else:
            d_safe = d - (np.sum(d * g) / (np.sum(g * g) + 1e-12)) * g
        label = labels[name]
        out[name] = g + betas[label] * d_safe if label is not None else g
    return out


def compare_suppression(params, grads, repeats: int) -> dict:
    drifted = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
    tx = redreg(encoder_labels, tau=0.0)
    state = tx.init(params)  # anchor = params; the drift is drifted - params
    # the step writes into its (donated) gradient buffers, as inside a jitted training step
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **SIGNALS)[0], donate_argnums=0)

    def fresh_grads():
        return jax.block_until_ready(jax.tree.map(jnp.copy, grads))

    ours = update(fresh_grads(), state, drifted)
    beta = math.exp(0.9 * math.tanh(0.7 - 0.3))

    def flat(tree):
        return {
            jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]
        }

    np_p, np_a, np_g = flat(drifted), flat(params), flat(grads)
    labels = {
        k: ("audio" if "['audio']" in k else "visual") if k.startswith("['encoders']") else None
        for k in np_p
    }
    betas = {"audio": beta, "visual": 0.0}
    ref = numpy_suppression(np_p, np_a, np_g, betas, labels)
    got = flat(ours)
    err = max(
        float(np.max(np.abs(got[k] - ref[k])) / (np.max(np.abs(ref[k])) + 1e-30)) for k in ref
    )
    if err > 1e-4:
        raise AssertionError(f"redreg and the NumPy reference disagree (max relative error {err})")
    jax.block_until_ready(update(fresh_grads(), state, drifted))
    t_np, t_jax = [], []
    for _ in range(repeats):  # alternating, so that load changes hit both alike
        start = time.perf_counter()
        numpy_suppression(np_p, np_a, np_g, betas, labels)
        t_np.append(time.perf_counter() - start)
        g = fresh_grads()
        start = time.perf_counter()
        jax.block_until_ready(update(g, state, drifted))
        t_jax.append(time.perf_counter() - start)
    return {
        "numpy_reference_s": statistics.median(t_np),
        "redreg_update_s": statistics.median(t_jax),
        "speedup_vs_numpy": statistics.median(t_np) / statistics.median(t_jax),
        "max_relative_error": err,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results" / "redreg.json")
    )
    parser.add_argument(
        "--prefer-vector-width",
        type=int,
        default=None,
        help="compile every update with XLA's xla_cpu_prefer_vector_width (e.g. 512)",
    )
    args = parser.parse_args()
    # the vectorised MAE sweep's host memory setting (REDUNDAX_KEEP_HOST_MEMORY=0: JAX's defaults)
    host_memory.keep_host_memory()
    options = None
    if args.prefer_vector_width is not None:
        options = {"xla_cpu_prefer_vector_width": args.prefer_vector_width}

    params = param_tree(0)
    grads = jax.tree.map(lambda x: 1e-2 * x + 1e-3, param_tree(1))
    n = sum(x.size for x in jax.tree.leaves(params))
    rows = summarize(sample_updates(KINDS, params, grads, args.repeats, options))
    suppression = compare_suppression(params, grads, args.repeats)

    device = jax.devices()[0]
    result = {
        "parameters": int(n),
        "device": f"{device.platform}:{device.device_kind}",
        "jax": jax.__version__,
        "python": platform.python_version(),
        "repeats": args.repeats,
        "compiler_options": options,
        "updates": rows,
        "suppression_step": suppression,
    }
    print(f"{n / 1e6:.1f}M parameters on {result['device']} (median of {args.repeats})")
    if options:
        print(f"compiler options: {options}")
    print(f"{'update':<28}{'ms':>9}{'x sgd':>7}{'(p25-p75)':>13}{'cpu x sgd':>11}")
    for kind, row in rows.items():
        spread = f"{row['ratio_p25']:.2f}-{row['ratio_p75']:.2f}"
        print(
            f"{kind:<28}{1e3 * row['seconds']:>9.2f}{row['ratio_vs_sgd']:>7.2f}{spread:>13}"
            f"{row['cpu_ratio_vs_sgd']:>11.2f}"
        )
    s = suppression
    print(
        f"suppression step: redreg update {1e3 * s['redreg_update_s']:.2f} ms, NumPy reference loop "
        f"{1e3 * s['numpy_reference_s']:.2f} ms (x{s['speedup_vs_numpy']:.2f}; max rel. error "
        f"{s['max_relative_error']:.1e})"
    )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
