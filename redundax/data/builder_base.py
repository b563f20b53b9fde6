"""Base class of the project's TFDS builders: array_record output, no TensorFlow."""

from __future__ import annotations

import inspect

import tensorflow_datasets as tfds
from etils import epath


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A ``GeneratorBasedBuilder`` that TFDS does not register by name.

    Builders are used as classes (see ``redundax.data.registry``), so their names cannot clash
    with TFDS's own catalogue. ``code_path`` is read with ``inspect`` because TFDS 4.9's default
    needs the ``importlib_resources`` backport for builders that live in a package.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None
