"""Datasets (TFDS builders writing array_record, no TensorFlow) and grain input pipelines.

One registry (`get_source`, `dataset_info`, `load_arrays`, `known_datasets`) serves the image
sets and the multimodal sets of `redundax.data.multimodal`; `data.name` selects either.

>>> source = get_source("sklearn_digits", "train")
>>> it = make_iterator(source, global_batch_size=64, seed=0, augment=True)
>>> batch = next(it)  # {"image": float32 (64, 8, 8, 1) standardised, "label": int32 (64,)}
"""

from redundax.data.cifar import Cifar10Binary, Cifar100Binary
from redundax.data.digits import SklearnDigits
from redundax.data.pipeline import (
    DatasetSpec,
    make_dataset,
    make_iterator,
    random_crop_flip,
    standardise,
    steps_per_epoch,
)
from redundax.data.registry import (
    DataSource,
    builder,
    dataset_info,
    get_source,
    is_multimodal,
    known_datasets,
    load_arrays,
    resolve_data_dir,
)

__all__ = [
    "Cifar10Binary",
    "Cifar100Binary",
    "DataSource",
    "DatasetSpec",
    "SklearnDigits",
    "builder",
    "dataset_info",
    "get_source",
    "is_multimodal",
    "known_datasets",
    "load_arrays",
    "make_dataset",
    "make_iterator",
    "random_crop_flip",
    "resolve_data_dir",
    "standardise",
    "steps_per_epoch",
]
