"""benchmarks/redreg.py's timing protocol: interleaved rounds and the ratio summary."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from benchmarks import redreg as bench


def test_summarize_against_hand_computed_ratios():
    samples = {
        "sgd": {"wall": [1.0, 2.0, 4.0, 3.0], "cpu": [1.0, 1.0, 2.0, 2.0]},
        "other": {"wall": [1.5, 2.0, 10.0, 3.3], "cpu": [1.0, 2.0, 3.0, 3.0]},
    }
    rows = bench.summarize(samples)
    assert rows["sgd"]["ratio_vs_sgd"] == 1.0 and rows["sgd"]["ratio_p75"] == 1.0
    other = rows["other"]
    assert other["seconds"] == pytest.approx((2.0 + 3.3) / 2)
    assert other["ratio_vs_sgd"] == pytest.approx(((2.0 + 3.3) / 2) / 2.5)
    per_round = np.sort([1.5, 1.0, 2.5, 1.1])  # round-by-round ratios
    # linear interpolation between order statistics (NumPy's default percentile)
    assert other["ratio_p25"] == pytest.approx(per_round[0] + 0.75 * (per_round[1] - per_round[0]))
    assert other["ratio_p75"] == pytest.approx(per_round[2] + 0.25 * (per_round[3] - per_round[2]))
    assert other["cpu_ratio_vs_sgd"] == pytest.approx(2.5 / 1.5)


def test_sample_updates_runs_every_kind_every_round():
    params = bench.param_tree(0, tiny=True)
    grads = jax.tree.map(lambda x: 1e-2 * x + 1e-3, bench.param_tree(1, tiny=True))
    kinds = ("sgd", "redreg(idle)+sgd", "ogm_ge+sgd")
    samples = bench.sample_updates(kinds, params, grads, repeats=3)
    assert set(samples) == set(kinds)
    for s in samples.values():
        assert len(s["wall"]) == len(s["cpu"]) == 3
        assert all(t > 0 for t in s["wall"])
    medians = bench.time_updates(kinds, params, grads, repeats=3)
    assert set(medians) == set(kinds) and all(t > 0 for t in medians.values())


def test_suppression_step_matches_the_numpy_loop_on_donated_gradients():
    """The jitted step writes into its donated gradient buffers; the benchmark's own gradients
    stay intact and its result equals the NumPy transcription of the reference loop."""
    params = bench.param_tree(0, tiny=True)
    grads = jax.tree.map(lambda x: 1e-2 * x + 1e-3, bench.param_tree(1, tiny=True))
    before = jax.tree.map(np.asarray, grads)
    out = bench.compare_suppression(params, grads, repeats=2)
    assert out["max_relative_error"] < 1e-6
    assert out["redreg_update_s"] > 0 and out["numpy_reference_s"] > 0
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(grads), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
