"""redundax: measure and regulate redundancy in neural representations (JAX, Flax NNX, optax)."""

__version__ = "0.1.0"
