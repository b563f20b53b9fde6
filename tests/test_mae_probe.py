"""Linear probe against scikit-learn's logistic regression, vmap over members, edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from redundax.probe import linear_probe, standardise


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:1200], idx[1200:]
    return x[tr].astype(np.float32), y[tr], x[te].astype(np.float32), y[te]


def test_probe_matches_sklearn_logistic_regression(digits):
    x_tr, y_tr, x_te, y_te = digits
    wd = 1e-2
    res = jax.jit(
        lambda a, b, c, d: linear_probe(
            a, b, c, d, num_classes=10, steps=1500, learning_rate=5e-2, weight_decay=wd
        )
    )(x_tr, y_tr, x_te, y_te)
    s_tr, s_te = (np.asarray(v) for v in standardise(jnp.asarray(x_tr), jnp.asarray(x_te)))
    # sklearn minimises C * sum CE + 1/2 ||W||^2, i.e. ours (mean CE + wd/2 ||W||^2) with C = 1/(n wd)
    clf = LogisticRegression(C=1.0 / (len(y_tr) * wd), max_iter=5000, tol=1e-10)
    clf.fit(s_tr, y_tr)
    logits = s_tr @ clf.coef_.T + clf.intercept_
    logits -= logits.max(1, keepdims=True)
    ce = -np.mean(logits[np.arange(len(y_tr)), y_tr] - np.log(np.exp(logits).sum(1)))
    sk_objective = ce + 0.5 * wd * np.sum(clf.coef_**2)
    # same convex objective: our optimum is as low as sklearn's, to optimiser tolerance
    assert float(res.train_loss) == pytest.approx(sk_objective, rel=2e-3)
    assert float(res.top1) == pytest.approx(clf.score(s_te, y_te), abs=0.015)
    assert float(res.train_top1) == pytest.approx(clf.score(s_tr, y_tr), abs=0.01)


def test_probe_separable_blobs_reach_perfect_accuracy():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 6)) * 10
    y = rng.integers(0, 4, 400)
    x = centres[y] + rng.normal(size=(400, 6))
    res = linear_probe(
        jnp.asarray(x[:300]),
        jnp.asarray(y[:300]),
        jnp.asarray(x[300:]),
        jnp.asarray(y[300:]),
        num_classes=4,
        steps=300,
    )
    assert float(res.top1) == 1.0 and float(res.train_top1) == 1.0


def test_probe_vmap_over_members_equals_separate_calls(digits):
    x_tr, y_tr, x_te, y_te = digits
    rng = np.random.default_rng(2)
    proj = rng.normal(size=(3, 64, 12)).astype(np.float32)
    f_tr, f_te = np.einsum("nd,mdk->mnk", x_tr, proj), np.einsum("nd,mdk->mnk", x_te, proj)

    def probe(a, c):
        return linear_probe(
            a,
            jnp.asarray(y_tr),
            c,
            jnp.asarray(y_te),
            num_classes=10,
            steps=100,
            batch_size=256,
            key=jax.random.key(0),
        )

    stacked = jax.jit(jax.vmap(probe))(f_tr, f_te)
    for k in range(3):
        one = jax.jit(probe)(f_tr[k], f_te[k])
        np.testing.assert_allclose(float(stacked.top1[k]), float(one.top1), atol=1e-6)
        np.testing.assert_allclose(float(stacked.train_loss[k]), float(one.train_loss), rtol=1e-4)


def test_standardise_keeps_constant_units_finite():
    x = jnp.asarray(np.c_[np.zeros(10), np.arange(10.0)])
    a, b = standardise(x, x + 1)
    assert np.isfinite(np.asarray(a)).all() and np.isfinite(np.asarray(b)).all()
    np.testing.assert_allclose(np.asarray(a[:, 1]).std(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(a[:, 0]), 0.0)


def test_probe_bad_input():
    x, y = jnp.zeros((10, 3)), jnp.zeros((10,), jnp.int32)
    with pytest.raises(ValueError, match="same d"):
        linear_probe(x, y, jnp.zeros((4, 2)), y[:4], num_classes=2)
    with pytest.raises(ValueError, match="batch_size"):
        linear_probe(x, y, x, y, num_classes=2, batch_size=20, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        linear_probe(x, y, x, y, num_classes=2, batch_size=5)
    with pytest.raises(ValueError, match="steps"):
        linear_probe(x, y, x, y, num_classes=2, steps=0)
