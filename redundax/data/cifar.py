"""TFDS builders for CIFAR-10 and CIFAR-100 from the official binary archives, without TensorFlow.

The archives (Krizhevsky, 2009) are read with :mod:`tarfile` and NumPy. Each record of the binary
version is a fixed-size run of bytes: the label byte(s) followed by 3,072 pixel bytes, the 1,024
red values of the 32x32 image in row-major order, then the green, then the blue (CHW layout).

* ``cifar-10-binary.tar.gz``: ``cifar-10-batches-bin/data_batch_{1..5}.bin`` (train, 50,000
  images) and ``test_batch.bin`` (10,000); a record is 1 label byte + 3,072 pixel bytes.
* ``cifar-100-binary.tar.gz``: ``cifar-100-binary/train.bin`` (50,000) and ``test.bin``
  (10,000); a record is 1 coarse label byte, 1 fine label byte and 3,072 pixel bytes. The fine
  label (100 classes) is ``label``; the coarse one (20 superclasses) is ``coarse_label``.

The builder looks for the archive in the TFDS manual directory, by default
``<data_dir>/downloads/manual/``. When it is missing it downloads it from the official address
(checking size and SHA-256) if the network allows, and otherwise raises a
:class:`FileNotFoundError` that names the file, the directory and the address.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import tarfile
import tempfile
import urllib.error
import urllib.request
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from redundax.data.builder_base import ArrayRecordBuilder

_CITATION = """\
@techreport{krizhevsky2009learning,
  author = {Krizhevsky, Alex},
  title = {Learning Multiple Layers of Features from Tiny Images},
  institution = {University of Toronto},
  year = {2009},
}"""

IMAGE_SHAPE = (32, 32, 3)
_PIXELS = 32 * 32 * 3
DOWNLOAD_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
    """Where a CIFAR binary archive comes from and how its records are laid out.

    Attributes:
      filename: name of the archive in the manual directory.
      url: official download address.
      size: archive size in bytes.
      sha256: archive SHA-256 (the values TFDS records for these URLs).
      splits: split name -> archive members holding that split, in order.
      label_keys: names of the label bytes that precede the pixels of a record.
      label_files: label key -> archive member with one class name per line.
    """

    filename: str
    url: str
    size: int
    sha256: str
    splits: dict[str, tuple[str, ...]]
    label_keys: tuple[str, ...]
    label_files: dict[str, str]

    @property
    def record_bytes(self) -> int:
        return len(self.label_keys) + _PIXELS


CIFAR10 = ArchiveSpec(
    filename="cifar-10-binary.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    size=170052171,
    sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    splits={
        "train": tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)),
        "test": ("cifar-10-batches-bin/test_batch.bin",),
    },
    label_keys=("label",),
    label_files={"label": "cifar-10-batches-bin/batches.meta.txt"},
)

CIFAR100 = ArchiveSpec(
    filename="cifar-100-binary.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    size=168513733,
    sha256="58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    splits={"train": ("cifar-100-binary/train.bin",), "test": ("cifar-100-binary/test.bin",)},
    label_keys=("coarse_label", "label"),
    label_files={
        "coarse_label": "cifar-100-binary/coarse_label_names.txt",
        "label": "cifar-100-binary/fine_label_names.txt",
    },
)


def decode_records(data: bytes, num_label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Decodes concatenated binary CIFAR records.

    Args:
      data: the bytes of one ``.bin`` file.
      num_label_bytes: 1 for CIFAR-10, 2 for CIFAR-100.

    Returns:
      ``(images, labels)``: ``uint8`` images ``(n, 32, 32, 3)`` (HWC) and ``uint8`` labels
      ``(n, num_label_bytes)``.
    """
    record = num_label_bytes + _PIXELS
    if len(data) % record:
        raise ValueError(
            f"CIFAR binary data of {len(data)} bytes is not a whole number of "
            f"{record}-byte records; the archive is damaged or of the wrong dataset."
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    images = rows[:, num_label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, :num_label_bytes].copy()


def read_split(
    archive: pathlib.Path, spec: ArchiveSpec, split: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reads one split of a CIFAR binary archive: images ``(n, 32, 32, 3)`` and labels by key."""
    images, labels = [], []
    with tarfile.open(archive, "r:*") as tar:
        for member in spec.splits[split]:
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise ValueError(
                    f"{archive} has no member {member!r}; expected the official "
                    f"{spec.filename} from {spec.url}."
                )
            x, y = decode_records(f.read(), len(spec.label_keys))
            images.append(x)
            labels.append(y)
    y = np.concatenate(labels)
    return np.concatenate(images), {k: y[:, i] for i, k in enumerate(spec.label_keys)}


def read_label_names(archive: pathlib.Path, spec: ArchiveSpec) -> dict[str, list[str]]:
    """Class names per label key, from the archive's name files (keys whose file is absent
    are left out)."""
    names = {}
    with tarfile.open(archive, "r:*") as tar:
        for key, member in spec.label_files.items():
            try:
                f = tar.extractfile(member)
            except KeyError:
                continue
            if f is not None:
                names[key] = [s.strip() for s in f.read().decode().splitlines() if s.strip()]
    return names


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_archive(
    spec: ArchiveSpec, directory: pathlib.Path, timeout: float = DOWNLOAD_TIMEOUT_S
) -> pathlib.Path:
    """Downloads ``spec.url`` into ``directory`` (atomically) and checks size and SHA-256.

    Raises:
      OSError: the download failed (for example no network).
      ValueError: the downloaded file has the wrong size or checksum (it is deleted).
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / spec.filename
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=spec.filename + ".", suffix=".part")
    tmp = pathlib.Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout) as r:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                out.write(chunk)
        size, digest = tmp.stat().st_size, _sha256(tmp)
        if size != spec.size or digest != spec.sha256:
            raise ValueError(
                f"Downloaded {spec.url} has {size} bytes and SHA-256 {digest}; expected "
                f"{spec.size} bytes and {spec.sha256}."
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def missing_archive_message(spec: ArchiveSpec, directory: pathlib.Path, reason: str = "") -> str:
    """The instructions given when an archive is missing."""
    msg = (
        f"{spec.filename} not found in {directory}. Download it from {spec.url} and put it "
        f"there as {directory / spec.filename} (the .tar.gz itself, not extracted), "
        "or pass a data_dir whose downloads/manual/ holds it."
    )
    if reason:
        msg += f" Automatic download failed: {reason}"
    return msg


def find_or_download(
    spec: ArchiveSpec, directory: pathlib.Path, download: bool = True
) -> pathlib.Path:
    """Path of ``spec``'s archive in ``directory``, downloading it first when allowed.

    Raises:
      FileNotFoundError: the archive is absent and could not be downloaded; the message
        names the file, the directory and the download address.
    """
    path = directory / spec.filename
    if path.is_file():
        return path
    if not download:
        raise FileNotFoundError(missing_archive_message(spec, directory))
    try:
        return download_archive(spec, directory)
    except (OSError, ValueError, urllib.error.URLError) as e:
        raise FileNotFoundError(
            missing_archive_message(spec, directory, f"{type(e).__name__}: {e}")
        ) from e


def _manual_instructions(spec: ArchiveSpec) -> str:
    return (
        f"Download {spec.url} and place {spec.filename} (not extracted) in "
        "<data_dir>/downloads/manual/."
    )


def _manual_dir(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    # TFDS's public `manual_dir` property asserts that the folder exists and is non-empty;
    # read the configured path so that a missing archive gets our own instructions.
    manual = getattr(dl_manager, "_manual_dir", None) or dl_manager.download_dir / "manual"
    return pathlib.Path(os.fspath(manual))


class _CifarBinary(ArrayRecordBuilder, skip_registration=True):
    """Common body of the CIFAR binary builders; subclasses set ``ARCHIVE`` and ``_info``."""

    ARCHIVE: ArchiveSpec
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Read from the official binary archive; records in archive order."
    }

    def __init__(self, *, download: bool = True, **kwargs):
        """Args: download: fetch a missing archive from the official URL; other arguments go to
        :class:`tfds.core.GeneratorBasedBuilder` (``data_dir``, ``file_format``, ...)."""
        self._download = download
        super().__init__(**kwargs)

    def _features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {"image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8)}

    def _make_info(self, description: str, features: dict) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        archive = find_or_download(self.ARCHIVE, _manual_dir(dl_manager), self._download)
        for key, names in read_label_names(archive, self.ARCHIVE).items():
            feature = self.info.features[key]
            if len(names) == feature.num_classes:
                feature.names = names
        return {split: self._generate_examples(archive, split) for split in self.ARCHIVE.splits}

    def _generate_examples(self, archive: pathlib.Path, split: str):
        images, labels = read_split(archive, self.ARCHIVE, split)
        for i, image in enumerate(images):
            yield i, {"image": image, **{k: int(v[i]) for k, v in labels.items()}}


class Cifar10Binary(_CifarBinary, skip_registration=True):
    """CIFAR-10 (Krizhevsky, 2009) from ``cifar-10-binary.tar.gz``.

    Features: ``image`` ``uint8`` ``(32, 32, 3)``, ``label`` in 0..9. Splits: ``train``
    (``data_batch_1..5``, 50,000 images) and ``test`` (10,000), each in archive order.
    """

    name = "cifar10_binary"
    ARCHIVE = CIFAR10
    MANUAL_DOWNLOAD_INSTRUCTIONS = _manual_instructions(CIFAR10)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(
            "CIFAR-10: 60,000 32x32 colour images in 10 classes (50,000 train, 10,000 test).",
            {**self._features(), "label": tfds.features.ClassLabel(num_classes=10)},
        )


class Cifar100Binary(_CifarBinary, skip_registration=True):
    """CIFAR-100 (Krizhevsky, 2009) from ``cifar-100-binary.tar.gz``.

    Features: ``image`` ``uint8`` ``(32, 32, 3)``, ``label`` the fine label in 0..99,
    ``coarse_label`` the superclass in 0..19. Splits: ``train`` (50,000) and ``test``
    (10,000), each in archive order.
    """

    name = "cifar100_binary"
    ARCHIVE = CIFAR100
    MANUAL_DOWNLOAD_INSTRUCTIONS = _manual_instructions(CIFAR100)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(
            "CIFAR-100: 60,000 32x32 colour images, 100 fine classes in 20 superclasses "
            "(50,000 train, 10,000 test).",
            {
                **self._features(),
                "label": tfds.features.ClassLabel(num_classes=100),
                "coarse_label": tfds.features.ClassLabel(num_classes=20),
            },
        )
