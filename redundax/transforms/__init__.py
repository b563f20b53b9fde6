"""optax gradient transformations for multimodal balance and the projections they use.

>>> tx = optax.chain(
...     redreg(encoder_labels, total_steps=1000, reset_every=steps_per_epoch),
...     optax.sgd(2e-3, momentum=0.9),
... )
>>> updates, opt_state = tx.update(grads, opt_state, params,
...                                probs=probs, sensitivity=red, similarity=sim)

- `redreg`: RedReg's redundancy monitor, co-information gate and orthogonal drift suppression
  (Yang et al., 2025).
- `ogm_ge`: on-the-fly gradient modulation with generalisation enhancement (Peng et al., 2022).
- `keep_pruned_zero`: masked training, pruned weights stay exactly zero after every update.
- `orthogonal_complement`: ``x - (<x, g>/||g||²) g`` for pytrees, per leaf or over the tree.
"""

from redundax.transforms.masking import KeepPrunedZeroState, keep_pruned_zero
from redundax.transforms.ogm_ge import OgmGeState, discrepancy_coefficients, ogm_ge
from redundax.transforms.projection import (
    leaf_vdot,
    orthogonal_complement,
    projection_coefficients,
    tree_vdot,
)
from redundax.transforms.redreg import RedRegState, cross_modal_similarity, redreg, tau_linear

__all__ = [
    "KeepPrunedZeroState",
    "OgmGeState",
    "RedRegState",
    "cross_modal_similarity",
    "discrepancy_coefficients",
    "keep_pruned_zero",
    "leaf_vdot",
    "ogm_ge",
    "orthogonal_complement",
    "projection_coefficients",
    "redreg",
    "tau_linear",
    "tree_vdot",
]
