"""Perturbation-sensitivity redundancy score of an encoder (RedReg's ``red_m``).

Yang et al. (2025, Sec. III-B) score the redundancy of a modality's representation by how much
it moves under small input noise: two views ``x + e1`` and ``x + e2`` of the same batch, with
``e1, e2 ~ N(0, sigma^2 I)`` independent, give

    red = E ||f(x + e1) - f(x + e2)||² / E ||(x + e1) - (x + e2)||²,

both expectations taken as means over every element (sample and unit), so the score is a mean
squared gain per unit: for a linear map ``f(x) = x A`` of ``d_in`` to ``d_out`` units it tends to
``||A||_F² / d_out``, and for ``f(x) = c x`` it is exactly ``c²``. The denominator is the
realised squared difference of the two views (after ``clip``), as in the reference code, not
its expectation ``2 sigma²``.

References:
  Yang, Li, Chen, Wang, Xiong, Fan. Adaptive Redundancy Regulation for Balanced Multimodal
  Information Refinement. arXiv:2511.13755, 2025.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def perturbation_sensitivity(
    apply_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    key: jax.Array,
    sigma: float = 0.03,
    *,
    clip: tuple[float, float] | None = None,
    eps: float = 1e-12,
) -> jax.Array:
    """Mean squared output change per mean squared input change under Gaussian input noise.

    Args:
      apply_fn: the encoder, a pure function of an input batch (for a model with batch
        statistics, bind it in evaluation mode, as the reference code does).
      x: an input batch (any shape ``apply_fn`` accepts).
      key: PRNG key for the two noise draws.
      sigma: standard deviation of the Gaussian noise (0.03 in the paper's code).
      clip: optional ``(low, high)`` to clip the noisy views to (the reference code clips
        images to ``[0, 1]``).
      eps: added to the denominator.

    Returns:
      The scalar score ``red`` (float32). Differentiable in the parameters ``apply_fn`` closes
      over; callers that only monitor it should wrap it in ``jax.lax.stop_gradient``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating-point array; got dtype {x.dtype}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive; got {sigma!r}.")
    if clip is not None and not clip[0] < clip[1]:
        raise ValueError(f"clip must be (low, high) with low < high; got {clip!r}.")
    k1, k2 = jax.random.split(key)
    x1 = x + sigma * jax.random.normal(k1, x.shape, x.dtype)
    x2 = x + sigma * jax.random.normal(k2, x.shape, x.dtype)
    if clip is not None:
        x1, x2 = jnp.clip(x1, *clip), jnp.clip(x2, *clip)
    z1 = jnp.asarray(apply_fn(x1), jnp.float32)
    z2 = jnp.asarray(apply_fn(x2), jnp.float32)
    num = jnp.mean(jnp.square(z1 - z2))
    den = jnp.mean(jnp.square(jnp.asarray(x1, jnp.float32) - jnp.asarray(x2, jnp.float32)))
    return num / (den + eps)
