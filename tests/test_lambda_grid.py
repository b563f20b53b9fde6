"""Lambda-grid refinement: midpoints exactly at the R_spec gaps, budget, saturation, no duplicates."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redundax.analysis import lambda_grid as lg

# the previous default digits sweep: lambda -> mean R_spec (penalty saturates from lambda = 1)
GRID = [0.0, 1e-3, 1e-2, 0.1, 1.0, 10.0, 500.0]
R_SPEC = [0.776, 0.770, 0.654, 0.155, 0.096, 0.097, 0.097]


def test_midpoints_exactly_at_the_gaps():
    # |dR| > 0.1 only for (1e-3, 1e-2) (0.116) and (1e-2, 0.1) (0.499): sqrt(1e-5), sqrt(1e-3)
    assert lg.refine(GRID, R_SPEC, gap=0.1, max_new=10) == [0.00316, 0.0316]
    assert lg.refine(GRID, R_SPEC, gap=0.2, max_new=10) == [0.0316]
    assert lg.refine(GRID, R_SPEC, gap=0.5, max_new=10) == []
    # order of the input does not matter
    perm = [3, 0, 6, 1, 5, 2, 4]
    assert lg.refine([GRID[i] for i in perm], [R_SPEC[i] for i in perm], gap=0.1, max_new=10) == [
        0.00316,
        0.0316,
    ]


def test_budget_takes_the_largest_gaps_first():
    assert lg.refine(GRID, R_SPEC, gap=0.1, max_new=1) == [0.0316]
    assert lg.refine(GRID, R_SPEC, gap=0.1, max_new=0) == []


def test_lambda_zero_stands_two_decades_below_its_neighbour():
    assert lg.refine([0.0, 1.0], [0.9, 0.1], gap=0.1, max_new=3) == [0.1]
    assert lg.geometric_midpoint(0.0, 0.02) == 0.002
    assert lg.geometric_midpoint(2.0, 8.0) == 4.0
    np.testing.assert_allclose(lg.log_positions([0.0, 1e-3, 1.0]), [1e-5, 1e-3, 1.0])
    np.testing.assert_allclose(lg.log_positions([0.0]), [1.0])


def test_saturation_and_min_ratio_stop_splitting():
    assert lg.saturated(GRID, R_SPEC, tol=0.01) == [1e-3, 10.0, 500.0]
    # a pair equal within tol is never split, whatever the gap
    assert lg.refine([1.0, 10.0], [0.100, 0.105], gap=1e-3, max_new=5, tol=0.01) == []
    assert lg.refine([1.0, 10.0], [0.100, 0.105], gap=1e-3, max_new=5, tol=0.0) == [3.16]
    # a jump between close lambdas is not bisected further
    assert lg.refine([1.0, 1.2], [0.9, 0.1], gap=0.1, max_new=5) == []
    assert lg.refine([1.0, 1.2], [0.9, 0.1], gap=0.1, max_new=5, min_ratio=1.1) == [1.1]


def test_rounding_never_duplicates_a_lambda():
    # sqrt(1.0 * 1.002) rounds to 1.00 at 3 digits: an existing value, so nothing is added
    assert lg.refine([1.0, 1.002], [0.9, 0.1], gap=0.1, max_new=5, min_ratio=1.0001) == []


@settings(max_examples=200, deadline=None)
@given(
    lams=st.lists(st.floats(1e-4, 1e3), min_size=2, max_size=10, unique=True),
    with_zero=st.booleans(),
    r=st.lists(st.floats(0, 1), min_size=11, max_size=11),
    gap=st.floats(0.01, 0.5),
    max_new=st.integers(0, 6),
)
def test_refine_properties(lams, with_zero, r, gap, max_new):
    lams = sorted({float(f"{x:.3g}") for x in lams} | ({0.0} if with_zero else set()))
    r_spec = r[: len(lams)]
    new = lg.refine(lams, r_spec, gap=gap, max_new=max_new, tol=0.0, min_ratio=1.5)
    assert len(new) <= max_new and new == sorted(new) and len(set(new)) == len(new)
    assert not any(math.isclose(a, b, rel_tol=1e-9) for a in new for b in lams)
    # brute force: each new value lies strictly inside an adjacent pair whose |dR| > gap, and
    # there is at most one new value per such pair
    pairs = [
        (lams[i], lams[i + 1]) for i in range(len(lams) - 1) if abs(r_spec[i + 1] - r_spec[i]) > gap
    ]
    homes = [next((p for p in pairs if p[0] < x < p[1]), None) for x in new]
    assert None not in homes and len(set(homes)) == len(homes)
    if max_new >= len(pairs):  # budget large enough: every splittable pair gets its midpoint
        expected = []
        for a, b in pairs:
            m = lg.geometric_midpoint(a, b) if a == 0 or b / a >= 1.5 else a
            if a < m < b:
                expected.append(m)
        assert new == sorted(expected)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="gap"):
        lg.refine([0.0, 1.0], [0.5, 0.1], gap=0.0, max_new=1)
    with pytest.raises(ValueError, match="max_new"):
        lg.refine([0.0, 1.0], [0.5, 0.1], gap=0.1, max_new=-1)
    with pytest.raises(ValueError, match="distinct"):
        lg.refine([1.0, 1.0], [0.5, 0.1], gap=0.1, max_new=1)
    with pytest.raises(ValueError, match="equal length"):
        lg.refine([0.0, 1.0], [0.5], gap=0.1, max_new=1)
    with pytest.raises(ValueError, match=">= 0"):
        lg.refine([-1.0, 1.0], [0.5, 0.1], gap=0.1, max_new=1)
    with pytest.raises(ValueError, match="min_ratio"):
        lg.refine([0.0, 1.0], [0.5, 0.1], gap=0.1, max_new=1, min_ratio=1.0)


def test_mean_by_lambda_averages_over_seeds():
    rows = [
        {"lambda_red": lam, "spectral_redundancy": r}
        for lam, r in ((1.0, 0.2), (0.0, 0.7), (1.0, 0.4), (0.0, 0.9))
    ]
    lams, means = lg.mean_by_lambda(rows)
    assert lams == [0.0, 1.0] and means == pytest.approx([0.8, 0.3])
