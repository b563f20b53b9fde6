"""Post-hoc analyses of trained networks and sweeps (streaming metric extraction and summaries);
the submodules are imported on first access (`redundax.analysis.r_star`).

- `channels`: two-axis channel metrics over a fixed calibration set (Safaai et al.), within-layer
  Spearman correlations, local/target clustering ARI against a permutation null, cross-layer
  propagation and paired bootstrap intervals.
- `r_star`: R* of accuracy against spectral redundancy (Bi, Zhu & Calhoun, Theorem 2): quadratic
  fit, bootstrap over seeds, two-lines test, and "measured" only when members bracket the peak.
- `lambda_grid`: adaptive refinement of a lambda sweep where neighbouring mean R_spec differ.
- `margins`: the best sweep member against baselines, with t intervals over seeds.
- `mae_table`: Table 2 of the MAE sweep (member rows, per-lambda summary, markdown, report).
- `estimators`: total correlation of a representation's units by the Gaussian, KSG and
  variational estimators with 95% intervals, and the Gaussian O-information.
"""

from redundax import _lazy

__all__ = ["channels", "estimators", "lambda_grid", "mae_table", "margins", "r_star"]

__getattr__, __dir__ = _lazy.attach(__name__, __all__)
