"""A tour of `redundax.functionals` on scikit-learn's bundled digits (offline, CPU, seconds).

    python -m experiments.functionals_demo

Prints the redundancy of three representations of the same 1797 images: raw pixels (64 units, some
constant over the data set), PCA-whitened pixels (decorrelated by construction) and a random ReLU
feature map with duplicated units (redundant by construction), plus exact f-redundancies of two
discretised pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import redundax.functionals as F


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


def main() -> None:
    metrics = {
        "R_spec": F.spectral_redundancy,
        "r_eff": F.effective_rank,
        "R_chi2": F.chi2_redundancy,
        "TC (nats)": F.gaussian_total_correlation,
    }
    jitted = {k: jax.jit(v) for k, v in metrics.items()}
    print(f"{'representation':20s} {'d':>4s} " + " ".join(f"{k:>10s}" for k in metrics))
    for name, z in representations().items():
        vals = [float(fn(jnp.asarray(z))) for fn in jitted.values()]
        print(f"{name:20s} {z.shape[1]:4d} " + " ".join(f"{v:10.4f}" for v in vals))
    pixels = load_digits().data
    a, b = np.digitize(pixels[:, 19], [4, 10]), np.digitize(pixels[:, 27], [4, 10])
    joint = np.zeros((3, 3))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    print("\nexact R_f of two neighbouring pixels, each binned into 3 levels:")
    for kernel in ["kl", "pearson_chi2", "squared_hellinger", "jensen_shannon", "total_variation"]:
        print(f"  {kernel:18s} {float(F.f_redundancy(jnp.asarray(joint), kernel)):.4f}")


if __name__ == "__main__":
    main()
