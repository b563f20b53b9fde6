"""A tour of `redundax.functionals` on scikit-learn's bundled digits (offline, CPU, under a minute).

    python -m experiments.functionals_demo --workdir runs/functionals_demo [--units 4,8] [--quick]

Part 1 prints the redundancy of three representations of the same 1797 images: raw pixels (64 units,
some constant over the data set), PCA-whitened pixels (decorrelated by construction) and a random ReLU
feature map with duplicated units (redundant by construction), plus exact f-redundancies of two
discretised pixels.

Part 2 trains a small MLP classifier (64 -> 32 tanh -> 10) for a few hundred Adam steps and estimates
the total correlation R_KL of a few of its hidden units three ways, each with a 95% interval:
the Gaussian closed form (bootstrap), the KSG nearest-neighbour estimator (subsampling, since
bootstrap duplicates bias KSG) and the variational Fenchel-dual lower bound (bootstrap over held-out
samples), next to the Gaussian O-information of the same units (> 0: redundancy-dominated)
(`redundax.analysis.estimators.compare_estimators`).

Writes to `--workdir`: `results.json`, `results.md` (both tables) and `estimators.png`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import redundax.functionals as F
from redundax.analysis.estimators import compare_estimators
from redundax.plots.estimators import estimates_with_intervals
from redundax.train import loop, optim
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib
from redundax.train import step as step_lib
from redundax.train.metrics import write_json


def representations(seed: int = 0) -> dict[str, np.ndarray]:
    pixels = load_digits().data.astype(np.float32)
    centred = pixels - pixels.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    keep = s > 1e-6 * s[0]
    whitened = u[:, keep] * np.sqrt(len(pixels))
    rng = np.random.default_rng(seed)
    relu = np.maximum(centred @ rng.normal(size=(64, 48)).astype(np.float32), 0)
    relu = np.concatenate([relu, relu[:, :16]], axis=1)  # 16 duplicated units
    return {
        "raw pixels": pixels,
        "PCA-whitened": whitened.astype(np.float32),
        "ReLU + duplicates": relu,
    }


def tour() -> dict:
    """Part 1: spectral, chi-square and Gaussian redundancy of three representations."""
    metrics = {
        "R_spec": F.spectral_redundancy,
        "r_eff": F.effective_rank,
        "R_chi2": F.chi2_redundancy,
        "TC (nats)": F.gaussian_total_correlation,
    }
    jitted = {k: jax.jit(v) for k, v in metrics.items()}
    rows = []
    print(f"{'representation':20s} {'d':>4s} " + " ".join(f"{k:>10s}" for k in metrics))
    for name, z in representations().items():
        vals = {k: float(fn(jnp.asarray(z))) for k, fn in jitted.items()}
        rows.append({"representation": name, "d": int(z.shape[1]), **vals})
        print(f"{name:20s} {z.shape[1]:4d} " + " ".join(f"{v:10.4f}" for v in vals.values()))
    pixels = load_digits().data
    a, b = np.digitize(pixels[:, 19], [4, 10]), np.digitize(pixels[:, 27], [4, 10])
    joint = np.zeros((3, 3))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    kernels = ["kl", "pearson_chi2", "squared_hellinger", "jensen_shannon", "total_variation"]
    exact = {k: float(F.f_redundancy(jnp.asarray(joint), k)) for k in kernels}
    print("\nexact R_f of two neighbouring pixels, each binned into 3 levels:")
    for k, v in exact.items():
        print(f"  {k:18s} {v:.4f}")
    return {"representations": rows, "pixel_pair_exact_r_f": exact}


# ----------------------------------------------------------------------------- part 2
class MLP(nnx.Module):
    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def features(self, x):
        return jnp.tanh(self.hidden(x))

    def __call__(self, x):
        return self.out(self.features(x))


def train_classifier(x, y, *, steps: int, hidden: int = 32, seed: int = 0) -> MLP:
    """Full-batch Adam on softmax cross-entropy through the engine's train step and loop (data
    parallel over all devices): a small trained network to read activations from."""
    tx, _ = optim.build({"name": "adamw", "lr": 1e-2, "schedule": "constant"}, steps)  # = Adam

    def loss_fn(model: MLP, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        del rng  # deterministic
        logits = model(batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}

    mesh = mesh_lib.make_data_mesh()
    state = mesh_lib.replicate(state_lib.create(MLP(hidden, rngs=nnx.Rngs(seed)), tx, seed), mesh)
    train_step = step_lib.make_train_step(loss_fn, tx)
    full_batch = itertools.repeat({"x": np.asarray(x), "y": np.asarray(y)})
    state = loop.train(state, train_step, full_batch, num_steps=steps, mesh=mesh,
                       log_every=max(steps, 1), progress=False, desc="classifier")  # fmt: skip
    return state.model()


@functools.lru_cache(maxsize=4)
def digits_activations(train_steps: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Hidden tanh activations `(1797, 32)` of a classifier trained on 2/3 of digits; test accuracy.

    Cached per (train_steps, seed): treat the returned array as read-only.
    """
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, te = perm[:1200], perm[1200:]
    model = train_classifier(jnp.asarray(x[tr]), jnp.asarray(y[tr]), steps=train_steps, seed=seed)
    acc = float(jnp.mean(jnp.argmax(model(jnp.asarray(x[te])), -1) == jnp.asarray(y[te])))
    return np.asarray(model.features(jnp.asarray(x))), acc


def markdown(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def estimator_section(
    workdir,
    *,
    unit_counts=(4, 8),
    train_steps=300,
    num_resamples=200,
    variational_steps=3000,
    seed=0,
) -> dict:
    """Train, estimate, and write `estimators.json`/`.md`/`.png` to `workdir`; returns the results."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    acts, acc = digits_activations(train_steps, seed)
    rows = compare_estimators(
        acts,
        list(unit_counts),
        key=jax.random.key(seed),
        num_resamples=num_resamples,
        variational_steps=variational_steps,
    )
    result = {"test_accuracy": acc, "num_samples": int(acts.shape[0]), "estimates": rows}
    cols = ["units", "estimator", "estimate", "low", "high", "note"]
    table = markdown(rows, cols)
    print(f"\nclassifier test accuracy {acc:.3f}; total correlation of hidden units (nats, 95%):")
    print(table)
    write_json(workdir / "estimators.json", result)
    (workdir / "estimators.md").write_text(table + "\n")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["estimator"] != "Gaussian O-info":
            groups.setdefault(r["units"], []).append(r)
    estimates_with_intervals(
        groups, workdir / "estimators.png", title="TC of digits-classifier hidden units"
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/functionals_demo")
    ap.add_argument("--units", default="4,8", help="comma-separated numbers of hidden units")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="tiny setting (seconds; for tests)")
    args = ap.parse_args()
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"tour": tour()}
    units = [int(u) for u in args.units.split(",")]
    kw = dict(train_steps=args.train_steps, num_resamples=args.resamples)
    if args.quick:
        units, kw = units[:1], dict(train_steps=20, num_resamples=16, variational_steps=300)
    results["estimators"] = estimator_section(workdir, unit_counts=units, **kw)
    rows = results["tour"]["representations"]
    md = ["## Redundancy of three digits representations", "", markdown(rows, list(rows[0]))]
    md += ["", "## Total correlation of classifier hidden units (95% intervals)", ""]
    md += [(workdir / "estimators.md").read_text()]
    write_json(workdir / "results.json", results)
    (workdir / "results.md").write_text("\n".join(md))
    print(
        f"\nwrote {workdir / 'results.md'}, {workdir / 'results.json'}, {workdir / 'estimators.png'}"
    )


if __name__ == "__main__":
    main()
