"""Total correlation of a representation's units by three estimators, each with a 95% interval.

`compare_estimators(activations, unit_counts, *, key, num_resamples=200, variational_steps=3000)`:
for each `d` of `unit_counts`, the `d` most variable units of `activations` (`(n, units)`) and
four rows (`{"units", "estimator", "estimate", "low", "high", "note"}`):

- "Gaussian TC": -1/2 log det of the correlation matrix (Bi, Zhu & Calhoun, Prop. 4), bootstrap
  interval (`redundax.functionals.bootstrap_interval`);
- "KSG TC": the Kraskov-Stoegbauer-Grassberger nearest-neighbour estimator (Kraskov et al., 2004,
  eq. 9; k = 3), subsampling interval of half the samples (a bootstrap's duplicates bias KSG);
- "variational KL": the Fenchel-dual lower bound with a trained critic
  (`redundax.functionals.variational_redundancy`), bootstrap over held-out samples;
- "Gaussian O-info": the Gaussian O-information TC - DTC (Rosas et al., 2019, eqs. 4-7; > 0:
  redundancy-dominated), bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from redundax import functionals as F


def _row(units: str, estimator: str, iv: F.Interval, note: str) -> dict:
    return {
        "units": units,
        "estimator": estimator,
        "estimate": float(iv.estimate),
        "low": float(iv.low),
        "high": float(iv.high),
        "note": note,
    }


def compare_estimators(
    activations: np.ndarray,
    unit_counts: Sequence[int],
    *,
    key: jax.Array,
    num_resamples: int = 200,
    variational_steps: int = 3000,
) -> list[dict]:
    """Gaussian / KSG / variational TC and Gaussian O-information rows (module docstring)."""
    activations = np.asarray(activations)
    if activations.ndim != 2:
        raise ValueError(f"`activations` must be (samples, units); got shape {activations.shape}.")
    bad = [d for d in unit_counts if not 2 <= int(d) <= activations.shape[1]]
    if bad:
        raise ValueError(
            f"`unit_counts` must lie in [2, {activations.shape[1]}] (the number of units); "
            f"got {bad}."
        )
    order = np.argsort(-activations.var(0))
    rows = []
    for d in unit_counts:
        z = jnp.asarray(activations[:, np.sort(order[:d])])
        label = f"top-{d} units"
        n = z.shape[0]
        keys = jax.random.split(jax.random.fold_in(key, d), 4)
        gauss = F.bootstrap_interval(
            F.gaussian_total_correlation, z, key=keys[0], num_resamples=num_resamples
        )
        rows.append(_row(label, "Gaussian TC", gauss, "-1/2 log det C; bootstrap"))
        ksg = F.bootstrap_interval(
            F.ksg_total_correlation,
            z,
            key=keys[1],
            num_resamples=max(num_resamples // 4, 8),
            subsample_size=n // 2,
        )
        rows.append(_row(label, "KSG TC", ksg, "k=3; subsampling m=n/2"))
        var = F.variational_redundancy(
            z, "kl", key=keys[2], hidden=(32, 32), max_steps=variational_steps, patience=3,
            num_resamples=num_resamples,
        )  # fmt: skip
        rows.append(
            _row(label, "variational KL", var.interval, f"lower bound; {var.steps} steps; held-out")
        )
        o = F.bootstrap_interval(
            F.gaussian_o_information, z, key=keys[3], num_resamples=num_resamples
        )
        rows.append(_row(label, "Gaussian O-info", o, "TC - DTC (> 0: redundancy); bootstrap"))
    return rows
