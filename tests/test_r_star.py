"""R*: quadratic peak, two-lines test, U support, and "measured" vs "peak not resolved"."""

import numpy as np
import pytest
from scipy import stats

from redundax.analysis import r_star as rs


def _rows(f, xs, seeds=3, noise=0.005, jitter=0.01, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for x in xs:
            x = x + rng.normal(0, jitter)
            rows.append(
                {"spectral_redundancy": x, "probe_top1": f(x) + rng.normal(0, noise), "seed": s}
            )
    return rows


def peaked(r):
    return 0.8 - 2.0 * (r - 0.5) ** 2


# ------------------------------------------------------------------------- the two building blocks
def test_quadratic_max_recovers_a_constructed_parabola():
    x = np.linspace(0.1, 0.9, 9)
    coef, peak = rs.quadratic_max(x, 0.8 - 2.0 * (x - 0.55) ** 2)
    # 0.8 - 2 (x - 0.55)^2 = (0.8 - 2 * 0.3025) + 2.2 x - 2 x^2
    np.testing.assert_allclose(coef, [0.8 - 0.605, 2.2, -2.0], atol=1e-10)
    assert peak == pytest.approx(0.55, abs=1e-10)
    assert rs.quadratic_max(x, 1 + (x - 0.5) ** 2)[1] is None  # opens upwards
    assert rs.quadratic_max(x, -((x - 1.5) ** 2))[1] is None  # vertex outside the data
    assert rs.quadratic_max(np.array([0.1, 0.2, 0.1]), np.zeros(3)) == (None, None)


def test_one_sided_slope_p_matches_the_textbook_t_test():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 12)
    y = 0.3 - 0.8 * x + rng.normal(0, 0.1, 12)
    # closed form: slope = Sxy / Sxx, se = sqrt(SSE / (n - 2) / Sxx), t-distribution, n - 2 dof
    sxx = np.sum((x - x.mean()) ** 2)
    slope = np.sum((x - x.mean()) * (y - y.mean())) / sxx
    resid = y - (y.mean() + slope * (x - x.mean()))
    t = slope / np.sqrt(np.sum(resid**2) / 10 / sxx)
    got_slope, p_fall = rs.one_sided_slope_p(x, y, -1)
    assert got_slope == pytest.approx(slope, rel=1e-10)
    assert p_fall == pytest.approx(stats.t.cdf(t, 10), rel=1e-8)
    assert rs.one_sided_slope_p(x, y, +1)[1] == pytest.approx(1 - stats.t.cdf(t, 10), rel=1e-8)
    assert rs.one_sided_slope_p(x[:2], y[:2], 1) == (pytest.approx(np.nan, nan_ok=True), 1.0)
    with pytest.raises(ValueError, match="sign"):
        rs.one_sided_slope_p(x, y, 0)


def test_two_lines_recovers_known_slopes_of_a_tent():
    # accuracy rises with slope +0.4 below 0.5 and falls with slope -0.4 above (noise-free, symmetric:
    # the quadratic fit peaks exactly at 0.5, the split point of the two-lines test)
    xs = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    rows = [
        {"spectral_redundancy": x, "probe_top1": 0.9 - 0.4 * abs(x - 0.5), "seed": s}
        for s in range(3)
        for x in xs
    ]
    est = rs.estimate_r_star(rows, bootstrap=50, seed=0, level=0.9, resolution=0.15)
    assert est["r_star"] == pytest.approx(0.5, abs=1e-9)
    tl = est["two_lines"]
    assert tl["slope_below"] == pytest.approx(0.4) and tl["slope_above"] == pytest.approx(-0.4)
    assert (tl["n_below"], tl["n_above"]) == (12, 12) and tl["p_below"] < 1e-6
    assert est["supported"] and est["verdict"] == rs.MEASURED
    assert est["nearest"] == pytest.approx([0.4, 0.6]) and est["gap"] == pytest.approx(0.2)


# ------------------------------------------------------------------- measured vs not resolved
def test_verdict_measured_when_members_bracket_the_peak():
    rows = _rows(lambda r: 0.8 - 2.0 * (r - 0.55) ** 2, np.linspace(0.1, 0.9, 7))
    est = rs.estimate_r_star(rows, bootstrap=300, seed=0, level=0.9, resolution=0.1)
    assert est["verdict"] == rs.MEASURED and est["supported"] and est["resolved"]
    assert est["r_star"] == pytest.approx(0.55, abs=0.03)
    lo, hi = est["interval"]
    assert lo <= 0.55 <= hi and hi - lo < 0.1
    # the nearest members on each side, by brute force over the rows
    x = np.array([r["spectral_redundancy"] for r in rows])
    assert est["nearest"] == [x[x < est["r_star"]].max(), x[x >= est["r_star"]].min()]
    assert est["statement"].startswith("R* measured")
    assert rs.regime(0.2, est) == "under-redundant" and rs.regime(0.8, est) == "over-redundant"
    assert rs.regime(est["r_star"], est) == "balanced (near R*)"


def test_verdict_not_resolved_when_the_peak_falls_in_a_gap():
    rows = _rows(peaked, (0.1, 0.15, 0.2, 0.8, 0.85, 0.9), noise=0.003, jitter=0.005, seed=3)
    est = rs.estimate_r_star(rows, bootstrap=300, seed=0, level=0.9, resolution=0.1)
    assert est["r_star"] == pytest.approx(0.5, abs=0.05)
    assert est["verdict"] == rs.NOT_RESOLVED and not est["resolved"]
    x = np.array([r["spectral_redundancy"] for r in rows])
    below, above = x[x < 0.5].max(), x[x > 0.5].min()
    assert est["nearest"] == [below, above] and est["gap"] == pytest.approx(above - below)
    assert est["statement"].startswith("Peak not resolved")
    assert f"between {below:.3f} and {above:.3f}" in est["statement"]
    assert rs.regime(0.5, est) == "-"  # no regimes without a measured R*
    # the same points with a looser resolution: both neighbours lie within 0.35 of the peak
    loose = rs.estimate_r_star(rows, bootstrap=300, seed=0, level=0.9, resolution=0.35)
    assert est["supported"] and loose["supported"]  # the U test does not depend on resolution
    assert loose["resolved"] and loose["verdict"] == rs.MEASURED


@pytest.mark.parametrize(
    ("f", "noise"),
    [
        (lambda r: 0.9 - 0.3 * r, 0.005),  # monotone
        (lambda r: 0.5 + (r - 0.5) ** 2, 0.005),  # a true U in error: accuracy dips
        # rising then flat (saturating): a concave quadratic fits it with an interior maximum,
        # but accuracy does not fall above that maximum
        (lambda r: 0.9 - 0.2 * np.exp(-12 * r), 0.01),
    ],
)
def test_no_u_is_said_plainly(f, noise):
    est = rs.estimate_r_star(
        _rows(f, np.linspace(0.1, 0.9, 7), noise=noise), bootstrap=300, seed=0, level=0.9
    )
    assert not est["supported"] and est["verdict"] != rs.MEASURED
    assert "The points do not support a U" in est["statement"]
    assert rs.regime(0.5, est) == "-"


def test_fewer_than_three_redundancies_and_bad_arguments():
    rows = [{"spectral_redundancy": r, "probe_top1": 0.5, "seed": 0} for r in (0.1, 0.2, 0.1)]
    est = rs.estimate_r_star(rows, bootstrap=10, seed=0, level=0.9)
    assert est["verdict"] == rs.NO_U and "Fewer than three" in est["statement"]
    with pytest.raises(ValueError, match="resolution"):
        rs.estimate_r_star(rows, bootstrap=10, seed=0, level=0.9, resolution=0.0)
    with pytest.raises(ValueError, match="level"):
        rs.estimate_r_star(rows, bootstrap=10, seed=0, level=1.5)
