"""Multimodal balance on the training engine: methods, optimizer, loss, metrics, evaluation, table.

The pieces `experiments/multimodal.py` assembles, importable on their own:

- `METHODS`, `parse_methods(value)`: `joint`; `ogm_ge` (Peng et al., 2022); `redreg` (Yang et
  al., 2025) and its ablations `redreg_no_monitor`, `redreg_no_gate`, `redreg_no_projection`
  (`projection="none"`), `redreg_scale` (plain scaling `g / (1 + beta)`).
- `make_model(model_config, spec, seed)`: the concat-fusion classifier of `redundax.models.fusion`.
- `gradient_transforms(config, method, steps_per_epoch, seed)`: the method's transforms, placed
  before the optimizer; `make_optimizer(config, method, steps_per_epoch, seed)`:
  `redundax.train.optim.build(config.optim, ..., before=gradient_transforms(...))`.
- `make_loss_fn(config, modalities, method)`: fused + unimodal cross-entropy; the per-step
  signals the transforms read (`probs`, OGM-GE `scores`, cross-modal `similarity`, perturbation
  `sensitivity`) leave through `aux["extra_args"]`.
- `make_metric_fn(modalities)`: per-example correctness of the fused head, each unimodal head and
  each modality's slice of the fused head; `make_steps(...)`: the jitted train step (logging the
  transforms' internals, `transform_signals`) and eval step.
- `eval_batches(source, batch_size)`: this process's test batches; `evaluate(eval_step, state,
  batches, modalities, batch_size=, mesh=)`: `redundax.train.evaluate.evaluate_batches` plus the
  imbalance (max - min accuracy over modalities).
- `summarise(results)`, `results_markdown(results)`: mean and standard deviation over seeds, and
  the results table.

References:
  Peng, Wei, Deng, Wang, Hu. Balanced Multimodal Learning via On-the-fly Gradient Modulation.
  CVPR 2022.
  Yang, Li, Chen, Wang, Xiong, Fan. Adaptive Redundancy Regulation for Balanced Multimodal
  Information Refinement. arXiv:2511.13755, 2025.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from redundax.data import multimodal as mdata
from redundax.functionals.sensitivity import perturbation_sensitivity
from redundax.functionals.similarity import cross_modal_similarity
from redundax.models import fusion
from redundax.train import config_schema, optim, step
from redundax.train.evaluate import evaluate_batches
from redundax.transforms import OgmGeState, RedRegState, ogm_ge, redreg

REDREG_VARIANTS: dict[str, dict[str, Any]] = {
    "redreg": {},
    "redreg_no_monitor": {"use_monitor": False},
    "redreg_no_gate": {"use_gate": False},
    "redreg_no_projection": {"projection": "none"},
    "redreg_scale": {"projection": "scale"},
}
METHODS = ("joint", "ogm_ge", *REDREG_VARIANTS)


def parse_methods(value: str | Sequence[str]) -> tuple[str, ...]:
    """`"joint,redreg"` or a sequence of names -> a tuple of known method names."""
    names = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
    names = tuple(n.strip() for n in names if n.strip())
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(
            f"config.methods must list methods among {', '.join(METHODS)} (comma separated); "
            f"got {value!r}."
        )
    return names


def make_model(model_config: Any, spec: mdata.MultimodalSpec, seed: int) -> nnx.Module:
    """`model_config.kind`: `"mlp"` (`hidden`, `features`) or `"resnet18"` encoders."""
    rngs = nnx.Rngs(seed)
    if model_config.kind == "mlp":
        return fusion.mlp_fusion(
            spec.shapes,
            spec.num_classes,
            hidden=model_config.hidden,
            features=model_config.features,
            rngs=rngs,
        )
    if model_config.kind == "resnet18":
        return fusion.resnet18_fusion(spec.shapes, spec.num_classes, rngs=rngs)
    raise ValueError(f"config.model.kind must be 'mlp' or 'resnet18'; got {model_config.kind!r}.")


def gradient_transforms(
    config: Any, method: str, steps_per_epoch: int, seed: int = 0
) -> list[optax.GradientTransformation]:
    """The transforms `method` puts before the optimizer (none for `joint`)."""
    num_steps = config.train.epochs * steps_per_epoch
    if method == "ogm_ge":
        g = config.ogm_ge
        return [
            ogm_ge(
                fusion.encoder_labels,
                alpha=g.alpha,
                noise=g.noise,
                start_step=g.start_epoch * steps_per_epoch,
                end_step=(g.end_epoch + 1) * steps_per_epoch - 1,
                seed=seed,
                min_ndim=g.min_ndim,
                normal=g.normal,
            )
        ]
    if method in REDREG_VARIANTS:
        r = config.redreg
        options = {"projection": r.projection, **REDREG_VARIANTS[method]}
        return [
            redreg(
                fusion.encoder_labels,
                tau=optax.linear_schedule(r.tau_start, r.tau_end, max(num_steps - 1, 1)),
                window=r.window,
                ema_decay=r.ema_decay,
                gamma=r.gamma,
                trigger=r.trigger,
                beta_scale=r.beta_scale,
                reset_every=steps_per_epoch if r.reset_every_epoch else None,
                **options,
            )
        ]
    parse_methods(method)  # raises for an unknown name
    return []


def make_optimizer(
    config: Any, method: str, steps_per_epoch: int, seed: int = 0
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`method`'s transforms, then `config.optim` (epoch-valued fields converted to steps)."""
    section = config_schema.epochs_to_steps(config.optim, steps_per_epoch)
    before = gradient_transforms(config, method, steps_per_epoch, seed)
    return optim.build(section, config.train.epochs * steps_per_epoch, before=before)


def _true_class_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.mean(jnp.take_along_axis(probs, labels[:, None], axis=-1))


def make_loss_fn(config: Any, modalities: tuple[str, ...], method: str) -> step.LossFn:
    """Fused + `loss.unimodal_weight` x unimodal cross-entropy; signals go out as `extra_args`."""
    weight = config.loss.unimodal_weight
    sigma = config.redreg.sigma
    needs_sensitivity = method in REDREG_VARIANTS

    def loss_fn(model: fusion.FusionClassifier, batch: dict, rng: jax.Array):
        labels = batch["label"]
        inputs = {m: batch[m] for m in modalities}
        fed = dict(inputs)
        if "keep" in batch:  # modality dropout: zero the dropped modality's inputs
            for i, m in enumerate(modalities):
                keep = batch["keep"][:, i].reshape((-1,) + (1,) * (inputs[m].ndim - 1))
                fed[m] = inputs[m] * keep
        out = model(fed)
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out.logits, labels))
        ce_m = {
            m: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(lg, labels))
            for m, lg in out.unimodal_logits.items()
        }
        loss = ce + weight * sum(ce_m.values())
        probs = {m: _true_class_prob(out.unimodal_logits[m], labels) for m in modalities}
        scores = {m: _true_class_prob(out.slice_logits[m], labels) for m in modalities}
        sim = cross_modal_similarity(out.features)
        extra = {"probs": probs, "scores": scores, "similarity": sim}
        aux = {
            "ce_fused": ce,
            "accuracy": jnp.mean(jnp.argmax(out.logits, -1) == labels),
            "similarity": sum(sim.values()) / len(sim),
            **{f"ce/{m}": v for m, v in ce_m.items()},
            **{f"p/{m}": v for m, v in probs.items()},
            **{f"s/{m}": v for m, v in scores.items()},
        }
        if needs_sensitivity:
            keys = jax.random.split(rng, len(modalities))
            red = {}
            for key, m in zip(keys, modalities, strict=True):
                encoder = model.encoders[m]
                encoder.eval()  # as the reference code: BatchNorm statistics, no updates
                red[m] = perturbation_sensitivity(encoder, inputs[m], key, sigma)
                encoder.train()
            extra["sensitivity"] = red
            aux.update({f"red/{m}": v for m, v in red.items()})
        aux["extra_args"] = jax.lax.stop_gradient(extra)
        return loss, aux

    return loss_fn


def make_metric_fn(modalities: tuple[str, ...]) -> step.MetricFn:
    """Per-example 0/1 correctness: `acc_fused`, `acc/<m>` (unimodal head), `acc_slice/<m>`."""

    def metric_fn(model: fusion.FusionClassifier, batch: Mapping) -> dict[str, jax.Array]:
        out = model({m: batch[m] for m in modalities})
        y = batch["label"]
        values = {"acc_fused": jnp.argmax(out.logits, -1) == y}
        for m in modalities:
            values[f"acc/{m}"] = jnp.argmax(out.unimodal_logits[m], -1) == y
            values[f"acc_slice/{m}"] = jnp.argmax(out.slice_logits[m], -1) == y
        return {k: v.astype(jnp.float32) for k, v in values.items()}

    return metric_fn


def transform_signals(opt_state: Any) -> dict[str, jax.Array]:
    """The logged internals of the RedReg / OGM-GE state inside an optax chain state."""
    found: dict[str, jax.Array] = {}

    def visit(node: Any) -> None:
        if isinstance(node, RedRegState):
            for field in ("growth", "score", "beta"):
                found.update({f"{field}/{m}": v for m, v in getattr(node, field).items()})
            found.update(gate=node.gate, tau=node.tau, dominant=node.dominant)
        elif isinstance(node, OgmGeState):
            found.update({f"ratio/{m}": v for m, v in node.ratio.items()})
            found.update({f"coeff/{m}": v for m, v in node.coeff.items()})
        elif isinstance(node, tuple):
            for child in node:
                visit(child)

    visit(opt_state)
    return found


def make_steps(
    config: Any, method: str, modalities: tuple[str, ...], mesh: Mesh, steps_per_epoch: int
) -> tuple[Callable, Callable]:
    """The jitted train and eval steps of `method`, shared by its seeds (one compilation).

    The seed enters the optimizer only through `init` (OGM-GE's noise key), so the step built
    from the seed-0 optimizer serves every seed.
    """
    tx, schedule = make_optimizer(config, method, steps_per_epoch, seed=0)
    base_step = step.make_train_step(
        make_loss_fn(config, modalities, method), tx, mesh=mesh, learning_rate=schedule
    )

    def train_step(s, batch):
        s, m = base_step(s, batch)
        return s, {**m, **transform_signals(s.opt_state)}

    return train_step, step.make_eval_step(make_metric_fn(modalities), mesh=mesh)


def eval_batches(
    source: mdata.MultimodalSource, batch_size: int, cache_bytes: int = 2**29
) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
    """A function returning this process's test batches (in order, unaugmented); a split
    smaller than `cache_bytes` (float32) is read once and kept in memory."""
    procs = jax.process_count()
    size = -(-batch_size // procs) * procs

    def batches() -> Iterable[dict[str, np.ndarray]]:
        it = mdata.make_iterator(
            source, global_batch_size=size, seed=0, shuffle=False, num_epochs=1,
            drop_remainder=False,
        )  # fmt: skip
        return (b for b in it if len(b["label"]))

    shapes = source.spec.shapes.values()
    if 4 * len(source) * sum(int(np.prod(s)) for s in shapes) > cache_bytes:
        return batches
    cached = list(batches())
    return lambda: cached


def evaluate(
    eval_step: Callable,
    state: Any,
    batches: Iterable[Mapping[str, np.ndarray]],
    modalities: Sequence[str],
    *,
    batch_size: int,
    mesh: Mesh,
) -> dict[str, float]:
    """`test/<metric>` means over the split and `test/imbalance(_slice)`: max - min over
    modalities of the unimodal-head (fused-head slice) accuracy."""
    means = evaluate_batches(eval_step, state, batches, batch_size=batch_size, mesh=mesh)
    out = {f"test/{k}": v for k, v in means.items()}
    accs = [out[f"test/acc/{m}"] for m in modalities]
    slices = [out[f"test/acc_slice/{m}"] for m in modalities]
    out["test/imbalance"] = max(accs) - min(accs)
    out["test/imbalance_slice"] = max(slices) - min(slices)
    return out


def summarise(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per method, the mean and (population) standard deviation over seeds of every `test/`
    metric, keyed without the prefix."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in results):
        rows = [r for r in results if r["method"] == method]
        keys = [k for k in rows[0] if k.startswith("test/")]
        table[method] = {
            k[len("test/") :]: (
                float(np.mean([r[k] for r in rows])),
                float(np.std([r[k] for r in rows])),
            )
            for k in keys
        }
    return table


def results_markdown(results: Mapping[str, Any]) -> str:
    """The results table (`results.md`) of an experiment's `results.json` content."""
    modalities = results["modalities"]
    cols = ["acc_fused", *(f"acc/{m}" for m in modalities), "imbalance"]
    cols += [*(f"acc_slice/{m}" for m in modalities), "imbalance_slice"]
    lines = [
        f"# multimodal balance: {results['dataset']}",
        "",
        f"Test accuracy, mean ± std over seeds {results['seeds']} ({results['epochs']} epochs). "
        "`acc/<m>`: unimodal head; `acc_slice/<m>`: the modality's share of the fused head; "
        "imbalance: max - min over modalities.",
        "",
        "| method | " + " | ".join(cols) + " |",
        "| --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for method, row in results["table"].items():
        cells = [f"{row[c][0]:.4f} ± {row[c][1]:.4f}" for c in cols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if results.get("dominance"):
        lines += [
            "",
            "Linear-classifier test accuracy of each view alone (dominance by construction): "
            + ", ".join(f"{k} {v:.3f}" for k, v in results["dominance"].items()),
        ]
    lines += ["", f"Wall time: {results['wall_time_sec']:.0f} s."]
    return "\n".join(lines) + "\n"
