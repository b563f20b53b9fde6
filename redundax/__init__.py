"""redundax: measure and regulate redundancy in neural representations (JAX, Flax NNX, optax).

>>> import redundax as rx
>>> rx.functionals.spectral_redundancy(x)

Subpackages load on first attribute access, so `import redundax` stays light:

- `functionals`: pure, jit/vmap/grad-safe redundancy functionals.
- `transforms`: optax gradient transformations (RedReg, OGM-GE, projections).
- `train`: the training engine (mesh, state, steps, loop, checkpoints, metrics, CLI).
- `models`: Flax NNX modules (ViT/MAE, CIFAR CNNs, fusion network, BERT-family encoder).
- `data`: TFDS builders (array_record) and grain pipelines.
- `prune`: channel and layer pruning.
- `analysis`: post-hoc analyses of trained networks.
- `monitor`: redundancy monitoring of any NNX model's layers.
"""

import importlib
from types import ModuleType

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


def __getattr__(name: str) -> ModuleType:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(
        f"module 'redundax' has no attribute {name!r}; public subpackages: {_SUBPACKAGES}"
    )


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
