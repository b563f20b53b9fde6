"""Datasets by name: prepare the TFDS builder on first use, read it back as NumPy.

One registry for every dataset: the image sets (``sklearn_digits``, ``cifar10``, ``cifar100``)
and the multimodal sets of ``redundax.data.multimodal`` (``digits_two_view``, ``cremad``,
``kinetics_sounds``), whose sources hold one array per modality and whose ``dataset_info`` is a
``MultimodalSpec``; ``config`` picks a builder config of those (CREMA-D's ``"1fps"``/``"3fps"``).

``get_source(name, split)`` prepares the array_record files under the data directory (once;
concurrent processes wait on a file lock) and returns a random-access source of NumPy dicts
read through TFDS's array_record data source. ``dataset_info(name)`` gives the constants the
pipeline needs; ``load_arrays`` reads a whole split for evaluation and probes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from redundax.data import cifar, digits, multimodal
from redundax.data.builder_base import DATA_DIR_ENV as DATA_DIR_ENV
from redundax.data.builder_base import file_lock, resolve_data_dir
from redundax.data.pipeline import DatasetSpec, standardise

_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "sklearn_digits": digits.SklearnDigits,
    "cifar10": cifar.Cifar10Binary,
    "cifar100": cifar.Cifar100Binary,
}

_SPLITS: dict[str, tuple[str, ...]] = {
    "sklearn_digits": ("train", "test"),
    "cifar10": tuple(cifar.CIFAR10.splits),
    "cifar100": tuple(cifar.CIFAR100.splits),
}


def _times255(*values: float) -> tuple[float, ...]:
    return tuple(255.0 * v for v in values)


_SPECS: dict[str, DatasetSpec] = {
    # Pixel mean and (population) standard deviation over the 1,437 training images, values
    # 0..16; tests recompute them from the prepared split. Augmentation: 1-pixel shifts only
    # (a flip changes what a digit means).
    "sklearn_digits": DatasetSpec(
        image_shape=(8, 8, 1),
        num_classes=10,
        mean=(4.888493823938761,),
        std=(6.017807227654174,),
        crop_padding=1,
        hflip=False,
    ),
    # Per-channel mean and (population) standard deviation over the 50,000 training images,
    # in 0..255 units (the widely used values in [0, 1] units, times 255). Augmentation: random
    # crop with 4-pixel zero padding and horizontal flip (He et al., 2016, Sec. 4.2).
    "cifar10": DatasetSpec(
        image_shape=(32, 32, 3),
        num_classes=10,
        mean=_times255(0.49139968, 0.48215841, 0.44653091),
        std=_times255(0.24703223, 0.24348513, 0.26158784),
        crop_padding=4,
        hflip=True,
    ),
    "cifar100": DatasetSpec(
        image_shape=(32, 32, 3),
        num_classes=100,
        mean=_times255(0.50707516, 0.48654887, 0.44091784),
        std=_times255(0.26733429, 0.25643846, 0.27615047),
        crop_padding=4,
        hflip=True,
    ),
}


def known_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`get_source`, :func:`dataset_info` and :func:`load_arrays`."""
    return (*_BUILDERS, *multimodal.known_datasets())


def is_multimodal(name: str) -> bool:
    """Whether ``name`` is one of the multimodal datasets (``redundax.data.multimodal``)."""
    return name in multimodal.known_datasets()


def _check_name(name: str) -> str:
    if name not in _BUILDERS:
        raise ValueError(
            f"Unknown dataset name {name!r}; known datasets: {', '.join(known_datasets())}."
        )
    return name


def _check_split(name: str, split: str) -> str:
    """Accepts a split name and TFDS slicing/concatenation (``"train[:90%]"``,
    ``"train+test"``)."""
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"split must be a non-empty string; got {split!r}.")
    for part in split.split("+"):
        base = part.split("[", 1)[0].strip()
        if base not in _SPLITS[name]:
            raise ValueError(
                f"Unknown split {split!r} for dataset {name!r}; its splits are "
                f"{', '.join(_SPLITS[name])} (TFDS slices such as 'train[:90%]' work too)."
            )
    return split


def dataset_info(name: str, config: str | None = None) -> DatasetSpec | multimodal.MultimodalSpec:
    """Image shape, class count, per-channel mean/std (stored pixel units) and augmentation; a
    ``MultimodalSpec`` for a multimodal dataset."""
    if is_multimodal(name):
        return multimodal.dataset_info(name, config)
    return _SPECS[_check_name(name)]


def builder(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    config: str | None = None,
) -> tfds.core.DatasetBuilder:
    """The array_record TFDS builder of ``name``, prepared (once) under ``data_dir``."""
    if is_multimodal(name):
        return multimodal.builder(name, data_dir, config)
    cls = _BUILDERS[_check_name(name)]
    root = resolve_data_dir(data_dir)
    kwargs: dict[str, Any] = {"data_dir": os.fspath(root), "file_format": "array_record"}
    if issubclass(cls, cifar._CifarBinary):
        kwargs["download"] = download
    b = cls(**kwargs)
    if b.is_prepared():
        return b
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{cls.name}.lock"):
        b = cls(**kwargs)  # another process may have prepared it meanwhile
        if not b.is_prepared():
            b.download_and_prepare()
    return b


class DataSource:
    """Random-access examples of one split as dicts of NumPy arrays.

    ``len(source)``, ``source[i]`` and ``source.__getitems__(indices)``; ``name``, ``split``
    and ``spec`` (the :class:`DatasetSpec` the pipeline reads).
    """

    def __init__(self, source: Any, name: str, split: str, spec: DatasetSpec):
        self._source = source
        self.name, self.split, self.spec = name, split, spec

    def __len__(self) -> int:
        return len(self._source)

    @staticmethod
    def _to_numpy(example: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in example.items()}

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self!r}")
        return self._to_numpy(self._source[index % n])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self._to_numpy(x) for x in self._source.__getitems__(list(indices))]

    def __repr__(self) -> str:
        return f"DataSource(name={self.name!r}, split={self.split!r}, len={len(self)})"


def get_source(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    config: str | None = None,
) -> DataSource | multimodal.MultimodalSource:
    """A random-access source of ``{"image": uint8 (H, W, C), "label": int64 ()}`` dicts (of
    ``{modality: array, ..., "label"}`` dicts for a multimodal dataset).

    Prepares the dataset under ``data_dir`` on first use (``$REDUNDAX_DATA_DIR`` or
    ``~/tensorflow_datasets`` by default). CIFAR archives are read from
    ``<data_dir>/downloads/manual/`` and downloaded there if absent and ``download``; the
    CREMA-D / Kinetics-Sounds files must be there already (else a ``FileNotFoundError`` shows
    the layout expected).
    """
    if is_multimodal(name):
        return multimodal.get_source(name, split, data_dir, config)
    _check_split(_check_name(name), split)
    b = builder(name, data_dir, download=download)
    return DataSource(b.as_data_source(split=split), name, split, _SPECS[name])


def load_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None, config: str | None = None
) -> tuple[Any, np.ndarray]:
    """A whole split in memory: standardised ``float32`` images ``(n, H, W, C)`` (a dict of
    them per modality for a multimodal dataset) and ``int32`` labels ``(n,)``."""
    if is_multimodal(name):
        return multimodal.load_arrays(name, split, data_dir, config)
    source = get_source(name, split, data_dir)
    examples = source.__getitems__(range(len(source)))
    images = np.stack([x["image"] for x in examples])
    labels = np.asarray([x["label"] for x in examples], np.int32)
    return standardise(images, source.spec), labels
