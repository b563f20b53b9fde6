"""Post-hoc analyses of trained networks (streaming metric extraction and summaries).

- `channels`: two-axis channel metrics over a fixed calibration set (Safaai et al.), within-layer
  Spearman correlations, local/target clustering ARI against a permutation null, cross-layer
  propagation and paired bootstrap intervals.
"""
