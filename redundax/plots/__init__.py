"""Figures the experiments write (matplotlib, Agg backend, PNG): one module per experiment,
imported on first access (`redundax.plots.monitor`).

- `monitor`: layer x step heatmaps and per-layer profiles of `redundax.monitor`.
- `mae`: the MAE redundancy sweep (Bi, Zhu & Calhoun, 2025, Figs. 1-2).
- `channels`: the two-axis channel experiment (Safaai et al., Figs. 2, 5, 6).
- `layers`: the layer-redundancy experiment (Liang, 2025, Fig. 1).
- `multimodal`: the multimodal-balance experiment (timelines, accuracy bars and curves).
- `estimators`: several estimates of one quantity with their intervals (functionals demo).
"""

from redundax import _lazy

__all__ = ["channels", "estimators", "layers", "mae", "monitor", "multimodal"]

__getattr__, __dir__ = _lazy.attach(__name__, __all__)
