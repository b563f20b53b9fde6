"""TFDS builder for scikit-learn's bundled 8x8 handwritten digits (real data, offline).

The 1,797 images of `sklearn.datasets.load_digits` are the test part of the UCI "Optical
Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998): 32x32 bitmaps of digits
divided into non-overlapping 4x4 blocks, each pixel the count of set bits in its block (0..16).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from redundax.data.builder_base import ArrayRecordBuilder

NUM_TEST = 360
"""Size of the test split; the train split holds the other 1,437 images."""

SPLIT_SEED = 0
"""Seed of the NumPy ``PCG64`` generator that draws the test examples within each class."""

_CITATION = """\
@misc{alpaydin1998optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49},
}"""


def split_indices(
    labels: np.ndarray, num_test: int = NUM_TEST, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices into ``labels``, both sorted ascending.

    Class ``c`` with ``n_c`` of the ``n`` examples gives ``k_c`` test examples, its
    largest-remainder share of ``num_test``: ``floor(num_test * n_c / n)`` plus one for the
    classes with the largest remainders ``num_test * n_c mod n`` (ties to the smaller class
    id), so that the ``k_c`` sum to ``num_test`` exactly. For each class in increasing order
    one generator ``np.random.default_rng(seed)`` permutes the class's indices and the first
    ``k_c`` go to the test split. Integer arithmetic only, so the split is the same on every
    platform.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 < num_test < n:
        raise ValueError(f"num_test must lie in (0, {n}); got {num_test}.")
    classes, counts = np.unique(labels, return_counts=True)
    quota = num_test * counts.astype(np.int64)
    k = quota // n
    short = num_test - int(k.sum())
    order = np.lexsort((classes, -(quota % n)))  # largest remainder first, then class id
    k[order[:short]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == c))[:k_c]
            for c, k_c in zip(classes, k, strict=True)
        ]
    )
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


class SklearnDigits(ArrayRecordBuilder, skip_registration=True):
    """scikit-learn's 8x8 digits as an array_record TFDS dataset.

    Features: ``image`` ``uint8`` of shape ``(8, 8, 1)`` with values 0..16 and ``label`` in
    0..9. Splits: ``test`` holds 360 images and ``train`` the other 1,437, drawn stratified by
    class with :func:`split_indices` (seed 0); within each split the examples keep the order
    of ``load_digits``. Prepared offline from the copy bundled with scikit-learn.
    """

    name = "sklearn_digits"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Stratified 1437/360 train/test split, seed 0."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "scikit-learn's 8x8 handwritten digits (1,797 images, values 0..16), "
                "with a fixed stratified 1437/360 train/test split."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # the data ship with scikit-learn
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.astype(np.uint8)[..., None]
        labels = digits.target.astype(np.int64)
        train, test = split_indices(labels)
        return {
            "train": self._generate_examples(images[train], labels[train]),
            "test": self._generate_examples(images[test], labels[test]),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image, "label": int(label)}
