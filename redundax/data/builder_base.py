"""Base class of the project's TFDS builders (array_record output, no TensorFlow) and where
they are prepared: ``resolve_data_dir`` and the ``file_lock`` that serialises preparation."""

from __future__ import annotations

import contextlib
import inspect
import os
import pathlib
from collections.abc import Iterator

import tensorflow_datasets as tfds
from etils import epath

DATA_DIR_ENV = "REDUNDAX_DATA_DIR"


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


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """``data_dir``, else ``$REDUNDAX_DATA_DIR``, else ``~/tensorflow_datasets``."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return pathlib.Path(chosen).expanduser()


@contextlib.contextmanager
def file_lock(path: pathlib.Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no POSIX locks: preparation is not guarded
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
