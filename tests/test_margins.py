"""Best member against baselines: paired margins, t intervals over seeds, 'beats every member'."""

import numpy as np
import pytest
from scipy import stats

from redundax.analysis import margins as mg
from redundax.analysis.mae_table import results_markdown, summarise

ROWS = [
    {"lambda_red": lam, "seed": s, "probe_top1": top1}
    for lam, tops in (
        (0.0, (0.90, 0.89, 0.91)),
        (0.01, (0.92, 0.91, 0.93)),
        (1.0, (0.84, 0.85, 0.83)),
    )
    for s, top1 in enumerate(tops)
]


def test_margins_pick_the_best_lambda_and_pair_by_seed():
    init = {0: 0.88, 1: 0.90, 2: 0.89}
    out = mg.baseline_margins(ROWS, {"raw": 0.95, "init": init}, level=0.9)
    assert out["best_lambda"] == 0.01 and out["best_top1_mean"] == pytest.approx(0.92)
    raw, ini = out["baselines"]["raw"], out["baselines"]["init"]
    np.testing.assert_allclose(list(raw["margins"].values()), [-0.03, -0.04, -0.02])
    np.testing.assert_allclose(list(ini["margins"].values()), [0.04, 0.01, 0.04])
    assert raw["beats_every_member"] and not ini["beats_every_member"]
    # the interval is scipy's t interval of the per-seed margins
    d = np.array([0.04, 0.01, 0.04])
    ref = stats.t.interval(0.9, 2, loc=d.mean(), scale=stats.sem(d))
    np.testing.assert_allclose(ini["interval"], ref)
    assert mg.t_interval([0.1], 0.9) is None


def test_statements_and_the_table_first_line():
    out = mg.baseline_margins(ROWS, {"raw_pixels": 0.95, "random_init": 0.5}, level=0.9)
    labels = {"raw_pixels": "raw pixels", "random_init": "the random-init encoder"}
    warning = mg.beaten_by(out, labels)
    assert warning.startswith("raw pixels (95.0 %) beats every member")
    headline = mg.margin_statement(out, labels)
    assert "λ = 0.01" in headline and "-3.0 points" in headline and "+42.0 points" in headline
    rows = [
        {
            **r,
            "spectral_redundancy": 0.5,
            "effective_rank": 3.0,
            "chi2_redundancy": 1.0,
            "gaussian_total_correlation": 1.0,
            "val_loss": 0.1,
            "train_loss": 0.1,
            "probe_train_top1": 1.0,
        }
        for r in ROWS
    ]
    summary = summarise(rows)
    init = {k: v for k, v in summary[0].items() if k.endswith(("_mean", "_std"))}
    base = {"random_init": init, "raw_pixels": {"probe_top1": 0.95, "num_features": 64}}
    r_star = {"statement": "x", "verdict": "no U"}
    md = results_markdown(
        summary, base, r_star, title="t", caption="c", headline=headline, warning=warning
    )
    assert md.splitlines()[0] == f"**{warning}**"
    md = results_markdown(summary, base, r_star, title="t", caption="c", headline=headline)
    assert md.splitlines()[0] == "# t" and md.count("| 0.01 | 0 |") == 1
    assert mg.beaten_by(mg.baseline_margins(ROWS, {"raw": 0.5}), None) is None


def test_bad_input():
    with pytest.raises(ValueError, match="seed"):
        mg.baseline_margins(ROWS, {"init": {0: 0.5}})
    with pytest.raises(ValueError, match="rows"):
        mg.baseline_margins([], {"raw": 0.5})
