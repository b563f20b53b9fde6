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
def file_lock(
    path: pathlib.Path, *, blocking: bool = True, record_pid: bool = False
) -> Iterator[None]:
    """An exclusive POSIX `flock` on `path` while the block runs.

    The kernel drops the lock when its process dies (even on SIGKILL), so a stale lock file of a
    dead process is simply taken over. `blocking=False` raises `BlockingIOError` at once when
    another process holds it; `record_pid` writes this process's id into the file (for messages).
    """
    try:
        import fcntl
    except ImportError:  # no POSIX locks: nothing is guarded
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            if record_pid:
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
