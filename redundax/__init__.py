"""redundax: measure and regulate redundancy in neural representations (JAX, Flax NNX, optax).

>>> import redundax as rx
>>> rx.functionals.spectral_redundancy(x)

Subpackages load on first attribute access, so `import redundax` stays light (no JAX):

- `functionals`: pure, jit/vmap/grad-safe redundancy functionals.
- `transforms`: optax gradient transformations (RedReg, OGM-GE, projections, masked training).
- `train`: the training engine (mesh, state, steps, loop, evaluation, optimizer, checkpoints,
  metrics, CLI).
- `models`: Flax NNX modules (ViT/MAE, CIFAR CNNs, fusion network, BERT-family encoder).
- `data`: TFDS builders (array_record) and grain pipelines.
- `prune`: channel and layer pruning.
- `analysis`: post-hoc analyses of trained networks.
- `monitor`: redundancy monitoring of any NNX model's layers.
- `plots`: the experiments' figures (matplotlib).
"""

from redundax import _lazy

__version__ = "0.1.0"

_SUBPACKAGES = (
    "analysis",
    "data",
    "functionals",
    "models",
    "monitor",
    "plots",
    "prune",
    "train",
    "transforms",
)

__all__ = [*_SUBPACKAGES, "__version__"]

__getattr__, __dir__ = _lazy.attach(__name__, _SUBPACKAGES, kind="subpackages")
