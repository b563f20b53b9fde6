"""`redundax.analysis.estimators.compare_estimators` on Gaussian samples of known total correlation."""

import jax
import numpy as np
import pytest

from redundax.analysis.estimators import compare_estimators


def _gaussian(n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five units: three correlated (equicorrelation 0.6, large variance) and two independent
    low-variance ones, so the three most variable units are the correlated ones."""
    c = np.full((3, 3), 0.6) + 0.4 * np.eye(3)
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(3), c, size=n) * 3.0
    noise = rng.normal(size=(n, 2)) * 0.1
    return np.concatenate([noise[:, :1], z, noise[:, 1:]], axis=1).astype(np.float32), c


def test_rows_match_closed_forms_and_the_true_total_correlation():
    x, c = _gaussian()
    rows = compare_estimators(
        x, [3], key=jax.random.key(0), num_resamples=16, variational_steps=100
    )
    by_name = {r["estimator"]: r for r in rows}
    assert set(by_name) == {"Gaussian TC", "KSG TC", "variational KL", "Gaussian O-info"}
    assert all(r["units"] == "top-3 units" for r in rows)
    for r in rows:
        assert r["low"] <= r["estimate"] <= r["high"], r
    # The Gaussian row is -1/2 log det of the sample correlation of the three correlated units
    # (NumPy), and the O-information its closed form (Rosas et al., 2019).
    sample = np.corrcoef(x[:, 1:4].astype(np.float64), rowvar=False)
    np.testing.assert_allclose(
        by_name["Gaussian TC"]["estimate"], -0.5 * np.linalg.slogdet(sample)[1], atol=1e-3
    )
    o_ref = -np.linalg.slogdet(sample)[1] - 0.5 * np.sum(np.log(np.diag(np.linalg.inv(sample))))
    np.testing.assert_allclose(by_name["Gaussian O-info"]["estimate"], o_ref, atol=1e-3)
    # KSG is consistent: near the population TC (-1/2 log det = 0.522 nats).
    true_tc = -0.5 * np.linalg.slogdet(c)[1]
    assert abs(by_name["KSG TC"]["estimate"] - true_tc) < 0.15
    # The variational row is a lower bound (short training: well below, never far above).
    assert by_name["variational KL"]["estimate"] < true_tc + 0.15


def test_bad_input_is_named():
    x, _ = _gaussian(n=50)
    with pytest.raises(ValueError, match="unit_counts"):
        compare_estimators(x, [6], key=jax.random.key(0))
    with pytest.raises(ValueError, match="unit_counts"):
        compare_estimators(x, [1], key=jax.random.key(0))
    with pytest.raises(ValueError, match="samples, units"):
        compare_estimators(x[:, 0], [2], key=jax.random.key(0))
