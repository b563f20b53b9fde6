"""Two-modality classification data: an offline two-view digits set and CREMA-D / Kinetics-Sounds.

Every dataset here is a TFDS builder writing ``array_record`` (no TensorFlow) whose examples
hold one array per modality and a ``label``; :func:`get_source` prepares and reads it,
:func:`load_arrays` returns a whole split standardised, :func:`make_iterator` yields
checkpointable grain batches ``{modality: float32 (b, ...), ..., "label": int32 (b,)}``.

``digits_two_view`` (offline, built from scikit-learn's 8x8 digits, same 1437/360 split as
``redundax.data.digits``). Each digit is seen twice:

* ``coarse``: the clean image averaged over 2x2 blocks, ``(4, 4, 1)``;
* ``occluded``: the full-resolution image with a 4x4 square (random position) set to 0 and
  Gaussian noise of standard deviation 3 (pixel values are 0..16) added, ``(8, 8, 1)``.

Occlusion position and noise are drawn once per example (seed 1), so the stored data are fixed;
with ``augment=True`` the pipeline re-draws the occluded view of a training example at every
visit (from the stored clean digit), so that it cannot be memorised and stays the weaker view
during training too; test examples keep the fixed draw. The
clean coarse view is the dominant modality by construction. Measured with a linear classifier
(shrinkage LDA, :func:`measure_dominance`) fitted on the training split and scored on the test
split: ``coarse`` 0.844, ``occluded`` 0.658, both views concatenated 0.886 -- the views differ
in strength and are complementary (the tests recompute these numbers).

``cremad`` (Cao et al., 2014; 6 emotions, 7,442 clips) and ``kinetics_sounds`` (31 classes),
read from the preprocessing layout of the OGM-GE code (Peng et al., 2022) on the user's disk, in
the TFDS manual directory (default ``<data_dir>/downloads/manual/``):

    cremad/                       kinetics_sounds/
      train.csv, test.csv           ks_train_overlap.txt, ks_test_overlap.txt
      AudioWAV/<clip>.wav           train_spec/<clip>.npy, test_spec/<clip>.npy
      Image-01-FPS/<clip>/*.jpg     train-frames-1fps/train/<clip>/frame_0000<k>.jpg
                                    val-frames-1fps/test/<clip>/frame_0000<k>.jpg

CREMA-D csv rows are ``<clip>,<NEU|HAP|SAD|FEA|DIS|ANG>`` (the split files shipped with the
OGM-GE code); the audio spectrogram is computed as there: waveform resampled to 22,050 Hz, tiled
to 3 s and clipped to [-1, 1], STFT with a 512-point Hann window and hop 353 (centred, zero
padded), ``log(|S| + 1e-7)``, shape ``(257, 188)``. Kinetics-Sounds list lines are
``<clip> ... <label>`` (spaces or commas, label last) and the spectrograms are the stored
128-bin log-mel filter banks, ``(1024, 128)``. Frames: ``num_frames`` frames per clip (evenly
spaced; the code draws them at random during training), resized to 224x224, RGB, uint8; the
pipeline normalises them with the ImageNet mean and standard deviation and, when augmenting,
applies a random resized crop (scale 0.08..1) and a horizontal flip, as the reference code
does (which crops the original frame, not the stored 224x224 one).

References:
  Peng, Wei, Deng, Wang, Hu. Balanced Multimodal Learning via On-the-fly Gradient Modulation.
  CVPR 2022.
  Yang, Li, Chen, Wang, Xiong, Fan. Adaptive Redundancy Regulation for Balanced Multimodal
  Information Refinement. arXiv:2511.13755, 2025.
  Cao, Cooper, Keutmann, Gur, Nenkova, Verma. CREMA-D: Crowd-sourced Emotional Multimodal
  Actors Dataset. IEEE Trans. Affective Computing, 2014.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import grain
import numpy as np
import tensorflow_datasets as tfds

from redundax.data import digits as digits_lib
from redundax.data.builder_base import ArrayRecordBuilder, file_lock, resolve_data_dir
from redundax.data.pipeline import resolve_shard, steps_per_epoch

# ---------------------------------------------------------------------------------------------
# Specs

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class MultimodalSpec(NamedTuple):
    """What models and the pipeline need to know about a multimodal dataset.

    Attributes:
      modalities: modality names, sorted; the feature names of the examples.
      shapes: stored shape of one example of each modality.
      num_classes: number of label classes.
      mean: per-modality mean (scalar, or per channel on the last axis), stored units.
      std: per-modality standard deviation, same form.
      frames: modalities stored as uint8 RGB frames ``(T, H, W, 3)``; augmentation applies a
        random resized crop and a flip to them.
      dominant: the modality dominant by construction, if known.
      redraw: modality -> function ``(example, rng) -> array`` that augmentation uses to draw
        a fresh copy of that modality from the example.
    """

    modalities: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]]
    num_classes: int
    mean: Mapping[str, float | tuple[float, ...]]
    std: Mapping[str, float | tuple[float, ...]]
    frames: tuple[str, ...] = ()
    dominant: str | None = None
    redraw: Mapping[str, Callable[[Mapping[str, Any], np.random.Generator], np.ndarray]] = {}


# ---------------------------------------------------------------------------------------------
# Two-view digits

OCCLUSION_SIZE = 4
"""Side of the square set to 0 in the ``occluded`` view."""
NOISE_STD = 3.0
"""Standard deviation of the Gaussian noise of the ``occluded`` view (pixel values 0..16)."""
VIEW_SEED = 1
"""Seed of the NumPy ``PCG64`` generator drawing occlusions and noise, in example order."""


def occlude(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ``occluded`` view of 8x8 digits ``(n, 8, 8)`` (values 0..16), ``(n, 8, 8)`` float32.

    Each image gets rows ``r..r+3`` and columns ``c..c+3`` set to 0 and noise
    ``NOISE_STD * N(0, 1)`` added; ``rng`` draws all ``r``, then all ``c`` (uniform on 0..4),
    then the noise ``(n, 8, 8)``.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"images must have shape (n, 8, 8); got {images.shape}.")
    n = images.shape[0]
    hi = 8 - OCCLUSION_SIZE + 1
    rows, cols = rng.integers(0, hi, n), rng.integers(0, hi, n)
    keep = np.ones((n, 8, 8), np.float32)
    for i in range(n):
        keep[i, rows[i] : rows[i] + OCCLUSION_SIZE, cols[i] : cols[i] + OCCLUSION_SIZE] = 0.0
    noise = NOISE_STD * rng.standard_normal((n, 8, 8))
    return (images * keep + noise).astype(np.float32)


def two_view_digits(images: np.ndarray, seed: int = VIEW_SEED) -> dict[str, np.ndarray]:
    """The ``coarse`` and ``occluded`` views of 8x8 digits ``(n, 8, 8)`` (values 0..16).

    ``coarse[i]`` is the mean of each 2x2 block of ``images[i]``; ``occluded`` is
    :func:`occlude` with the generator ``np.random.default_rng(seed)``.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"images must have shape (n, 8, 8); got {images.shape}.")
    n = images.shape[0]
    coarse = images.reshape(n, 4, 2, 4, 2).mean(axis=(2, 4))
    occluded = occlude(images, np.random.default_rng(seed))
    return {"coarse": coarse[..., None], "occluded": occluded[..., None]}


def redraw_occluded(example: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """A fresh ``occluded`` view of one example (training augmentation): :func:`occlude` of
    its clean ``digit`` with ``rng``, so the noisy view cannot be memorised."""
    digit = np.asarray(example["digit"], np.float32)[None, ..., 0]
    return occlude(digit, rng)[0][..., None]


class DigitsTwoView(ArrayRecordBuilder, skip_registration=True):
    """scikit-learn's digits seen as a clean coarse view and a noisy, occluded view.

    Features: ``coarse`` float32 ``(4, 4, 1)``, ``occluded`` float32 ``(8, 8, 1)`` (one fixed
    draw), ``digit`` uint8 ``(8, 8, 1)`` (the clean image, from which augmentation re-draws the
    occluded view), ``label`` in 0..9. Splits: the stratified 1437/360 split of
    ``redundax.data.digits``.
    """

    name = "digits_two_view"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "coarse 2x2-mean view; occluded view (4x4 square, noise std 3, seed 1).",
        "1.1.0": "the clean digit is stored too, for re-drawn occluded views.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Two views of scikit-learn's 8x8 digits; the coarse view dominates.",
            features=tfds.features.FeaturesDict(
                {
                    "coarse": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.float32),
                    "occluded": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.float32),
                    "digit": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager
        from sklearn.datasets import load_digits

        d = load_digits()
        views = two_view_digits(d.images)
        views["digit"] = d.images.astype(np.uint8)[..., None]
        labels = d.target.astype(np.int64)
        train, test = digits_lib.split_indices(labels)
        return {
            "train": self._generate_examples(views, labels, train),
            "test": self._generate_examples(views, labels, test),
        }

    def _generate_examples(self, views, labels, index):
        for i in index:
            yield (
                int(i),
                {
                    "coarse": views["coarse"][i],
                    "occluded": views["occluded"][i],
                    "digit": views["digit"][i],
                    "label": int(labels[i]),
                },
            )


# ---------------------------------------------------------------------------------------------
# CREMA-D and Kinetics-Sounds


CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
CREMAD_RATE = 22050
CREMAD_SECONDS = 3
STFT_N_FFT = 512
STFT_HOP = 353


def log_spectrogram(
    samples: np.ndarray, n_fft: int = STFT_N_FFT, hop: int = STFT_HOP
) -> np.ndarray:
    """``log(|STFT| + 1e-7)``: periodic Hann window, centred frames, zero padding.

    Returns ``(n_fft // 2 + 1, 1 + len(samples) // hop)`` float32 (frequency x time).
    """
    x = np.asarray(samples, np.float64)
    pad = n_fft // 2
    x = np.pad(x, (pad, pad))
    num = 1 + (len(x) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(num)[:, None]
    spec = np.fft.rfft(x[idx] * window, axis=-1).T
    return np.log(np.abs(spec) + 1e-7).astype(np.float32)


def cremad_audio(path: os.PathLike | str) -> np.ndarray:
    """The OGM-GE audio input of one CREMA-D wav file, ``(257, 188)`` float32."""
    from math import gcd

    from scipy.io import wavfile
    from scipy.signal import resample_poly

    rate, wav = wavfile.read(os.fspath(path))
    wav = np.asarray(wav)
    if np.issubdtype(wav.dtype, np.integer):
        wav = wav.astype(np.float64) / float(np.iinfo(wav.dtype).max + 1)
    wav = wav.astype(np.float64)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if rate != CREMAD_RATE:
        g = gcd(rate, CREMAD_RATE)
        wav = resample_poly(wav, CREMAD_RATE // g, rate // g)
    length = CREMAD_RATE * CREMAD_SECONDS
    reps = int(np.ceil(length / max(len(wav), 1)))
    wav = np.clip(np.tile(wav, max(reps, 1))[:length], -1.0, 1.0)
    return log_spectrogram(wav)


def even_frames(files: Sequence[str], num_frames: int) -> list[str]:
    """``num_frames`` of the sorted ``files``, evenly spaced (repeating when there are fewer)."""
    files = sorted(files)
    if not files:
        raise ValueError("no frame files found")
    pos = (np.arange(num_frames) + 0.5) * len(files) / num_frames
    return [files[min(int(p), len(files) - 1)] for p in pos]


def read_frames(paths: Sequence[os.PathLike | str], size: int = 224) -> np.ndarray:
    """RGB frames resized to ``size x size`` (bilinear), ``(T, size, size, 3)`` uint8."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)))
    return np.stack(out).astype(np.uint8)


def _missing(name: str, root: pathlib.Path, layout: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name}: the preprocessed data were not found under {root}. Place them in the TFDS "
        f"manual directory (<data_dir>/downloads/manual/{name}/) in the OGM-GE layout:\n"
        f"{layout}\nthen call get_source({name!r}, 'train', data_dir=<data_dir>) again."
    )


_CREMAD_LAYOUT = """  train.csv, test.csv      rows '<clip>,<NEU|HAP|SAD|FEA|DIS|ANG>' (OGM-GE's data/CREMAD)
  AudioWAV/<clip>.wav      the CREMA-D audio
  Image-01-FPS/<clip>/     frames extracted at 1 fps (.jpg)"""

_KS_LAYOUT = """  ks_train_overlap.txt, ks_test_overlap.txt   lines '<clip> ... <label>'
  train_spec/<clip>.npy, test_spec/<clip>.npy   (1024, 128) log-mel filter banks
  train-frames-1fps/train/<clip>/frame_0000<k>.jpg
  val-frames-1fps/test/<clip>/frame_0000<k>.jpg"""


def _manual_dir(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    manual = getattr(dl_manager, "_manual_dir", None) or dl_manager.download_dir / "manual"
    return pathlib.Path(os.fspath(manual))


@dataclasses.dataclass
class AVConfig(tfds.core.BuilderConfig):
    """Frames kept per clip (``num_frames``) and the folder they are read from."""

    num_frames: int = 1
    frames_dir: str = "Image-01-FPS"


class CremaD(ArrayRecordBuilder, skip_registration=True):
    """CREMA-D audio-visual emotion recognition, OGM-GE preprocessing (module docstring).

    Features: ``audio`` float32 ``(257, 188, 1)`` log-magnitude spectrogram, ``visual`` uint8
    ``(num_frames, 224, 224, 3)``, ``label`` in 0..5 (NEU, HAP, SAD, FEA, DIS, ANG).
    Configs: ``1fps`` (one frame from ``Image-01-FPS``, the OGM-GE setting) and ``3fps``
    (three frames from ``Image-03-FPS``, the RedReg code's default).
    """

    name = "cremad"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "OGM-GE preprocessing layout."}
    BUILDER_CONFIGS: ClassVar[list[AVConfig]] = [
        AVConfig(name="1fps", num_frames=1, frames_dir="Image-01-FPS"),
        AVConfig(name="3fps", num_frames=3, frames_dir="Image-03-FPS"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the OGM-GE CREMA-D layout in <manual_dir>/cremad/:\n" + (
        _CREMAD_LAYOUT
    )

    def _info(self) -> tfds.core.DatasetInfo:
        t = self.builder_config.num_frames
        return tfds.core.DatasetInfo(
            builder=self,
            description="CREMA-D, audio spectrogram and video frames (OGM-GE preprocessing).",
            features=tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Tensor(shape=(257, 188, 1), dtype=np.float32),
                    "visual": tfds.features.Tensor(shape=(t, 224, 224, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(CREMAD_CLASSES)),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        root = _manual_dir(dl_manager) / "cremad"
        needed = [root / "train.csv", root / "test.csv", root / "AudioWAV"]
        if (
            not all(p.exists() for p in needed)
            or not (root / self.builder_config.frames_dir).exists()
        ):
            raise _missing("cremad", root, _CREMAD_LAYOUT)
        return {s: self._generate_examples(root, root / f"{s}.csv") for s in ("train", "test")}

    def _generate_examples(self, root: pathlib.Path, listing: pathlib.Path):
        cfg = self.builder_config
        with open(listing, encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r]
        for clip, emotion, *_ in rows:
            wav = root / "AudioWAV" / f"{clip}.wav"
            frames = root / cfg.frames_dir / clip
            if not (wav.exists() and frames.is_dir()):
                continue  # the reference code skips clips with missing files too
            files = [p.name for p in frames.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")]
            if not files:
                continue
            yield (
                clip,
                {
                    "audio": cremad_audio(wav)[..., None],
                    "visual": read_frames([frames / n for n in even_frames(files, cfg.num_frames)]),
                    "label": CREMAD_CLASSES.index(emotion.strip()),
                },
            )


def ks_frame_names(file_num: int, pick: int = 3) -> list[str]:
    """Kinetics-Sounds test-mode frame choice of the reference code: segment centres.

    With ``seg = file_num // pick``, frame ``i`` is ``i * seg + max(seg // 2, 1)`` (1 when
    ``file_num <= 6``), capped at 9, named ``frame_0000<k>.jpg``.
    """
    seg = file_num // pick
    names = []
    for i in range(pick):
        k = i * seg + max(seg // 2, 1) if file_num > 6 else 1
        names.append(f"frame_0000{min(k, 9)}.jpg")
    return names


class KineticsSounds(ArrayRecordBuilder, skip_registration=True):
    """Kinetics-Sounds (31 classes), OGM-GE/RedReg preprocessing (module docstring).

    Features: ``audio`` float32 ``(1024, 128, 1)`` log-mel filter bank, ``visual`` uint8
    ``(3, 224, 224, 3)``, ``label`` in 0..30.
    """

    name = "kinetics_sounds"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "OGM-GE preprocessing layout."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the Kinetics-Sounds layout in <manual_dir>/kinetics_sounds/:\n" + _KS_LAYOUT
    )
    _SPLITS: ClassVar[dict[str, tuple[str, str, str]]] = {
        "train": ("ks_train_overlap.txt", "train_spec", "train-frames-1fps/train"),
        "test": ("ks_test_overlap.txt", "test_spec", "val-frames-1fps/test"),
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Kinetics-Sounds, audio filter banks and 3 video frames.",
            features=tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Tensor(shape=(1024, 128, 1), dtype=np.float32),
                    "visual": tfds.features.Tensor(shape=(3, 224, 224, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=31),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        root = _manual_dir(dl_manager) / "kinetics_sounds"
        for listing, spec_dir, frame_dir in self._SPLITS.values():
            if not all((root / p).exists() for p in (listing, spec_dir, frame_dir)):
                raise _missing("kinetics_sounds", root, _KS_LAYOUT)
        return {
            split: self._generate_examples(root, *paths) for split, paths in self._SPLITS.items()
        }

    def _generate_examples(self, root: pathlib.Path, listing: str, spec_dir: str, frame_dir: str):
        with open(root / listing) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        for line in lines:
            parts = line.replace(",", " ").split()
            clip, label = parts[0], int(parts[-1])
            spec_path = root / spec_dir / f"{clip}.npy"
            frames = root / frame_dir / clip
            if not spec_path.exists() or not frames.is_dir():
                continue
            files = [p.name for p in frames.iterdir() if p.suffix.lower() == ".jpg"]
            if len(files) <= 3:  # the reference code keeps clips with more than 3 frames
                continue
            spec = np.asarray(np.load(spec_path), np.float32)
            if spec.shape != (1024, 128):
                raise ValueError(
                    f"{spec_path}: expected a (1024, 128) filter bank; got {spec.shape}."
                )
            yield (
                clip,
                {
                    "audio": spec[..., None],
                    "visual": read_frames([frames / n for n in ks_frame_names(len(files))]),
                    "label": label,
                },
            )


# ---------------------------------------------------------------------------------------------
# Registry, sources and arrays

_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "digits_two_view": DigitsTwoView,
    "cremad": CremaD,
    "kinetics_sounds": KineticsSounds,
}

_SPECS: dict[str, MultimodalSpec] = {
    # Means and (population) standard deviations over the 1,437 training examples; the tests
    # recompute them from the prepared split.
    "digits_two_view": MultimodalSpec(
        modalities=("coarse", "occluded"),
        shapes={"coarse": (4, 4, 1), "occluded": (8, 8, 1)},
        num_classes=10,
        mean={"coarse": 4.8884938, "occluded": 3.2391699},
        std={"coarse": 4.8448739, "occluded": 6.1576561},
        dominant="coarse",
        redraw={"occluded": redraw_occluded},
    ),
    # The OGM-GE code feeds CREMA-D log spectrograms unnormalised, and Kinetics-Sounds filter
    # banks are stored normalised; frames get the ImageNet statistics.
    "cremad": MultimodalSpec(
        modalities=("audio", "visual"),
        shapes={"audio": (257, 188, 1), "visual": (1, 224, 224, 3)},
        num_classes=6,
        mean={"audio": 0.0, "visual": IMAGENET_MEAN},
        std={"audio": 1.0, "visual": IMAGENET_STD},
        frames=("visual",),
        dominant="audio",
    ),
    "kinetics_sounds": MultimodalSpec(
        modalities=("audio", "visual"),
        shapes={"audio": (1024, 128, 1), "visual": (3, 224, 224, 3)},
        num_classes=31,
        mean={"audio": 0.0, "visual": IMAGENET_MEAN},
        std={"audio": 1.0, "visual": IMAGENET_STD},
        frames=("visual",),
        dominant="audio",
    ),
}


def known_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`get_source`, :func:`dataset_info` and :func:`load_arrays`."""
    return tuple(_BUILDERS)


def _check_name(name: str) -> str:
    if name not in _BUILDERS:
        raise ValueError(
            f"Unknown multimodal dataset {name!r}; known: {', '.join(known_datasets())}."
        )
    return name


def dataset_info(name: str, config: str | None = None) -> MultimodalSpec:
    """The :class:`MultimodalSpec` of ``name`` (``config`` picks CREMA-D's frame count)."""
    spec = _SPECS[_check_name(name)]
    if name == "cremad" and config is not None:
        t = {c.name: c.num_frames for c in CremaD.BUILDER_CONFIGS}.get(config)
        if t is None:
            raise ValueError(f"cremad config must be one of 1fps, 3fps; got {config!r}.")
        spec = spec._replace(shapes={**spec.shapes, "visual": (t, 224, 224, 3)})
    return spec


def builder(
    name: str, data_dir: str | os.PathLike | None = None, config: str | None = None
) -> tfds.core.DatasetBuilder:
    """The prepared array_record builder of ``name`` (prepared once, under a file lock)."""
    cls = _BUILDERS[_check_name(name)]
    root = resolve_data_dir(data_dir)
    kwargs: dict[str, Any] = {"data_dir": os.fspath(root), "file_format": "array_record"}
    if cls is CremaD:
        kwargs["config"] = config or "1fps"
    b = cls(**kwargs)
    if b.is_prepared():
        return b
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{cls.name}.lock"):
        b = cls(**kwargs)
        if not b.is_prepared():
            b.download_and_prepare()
    return b


class MultimodalSource:
    """Random-access examples of one split: dicts of NumPy arrays (one per modality, label)."""

    def __init__(self, source: Any, name: str, split: str, spec: MultimodalSpec):
        self._source = source
        self.name, self.split, self.spec = name, split, spec

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._source[int(index)].items()}

    def __repr__(self) -> str:
        return f"MultimodalSource(name={self.name!r}, split={self.split!r}, len={len(self)})"


def get_source(
    name: str, split: str, data_dir: str | os.PathLike | None = None, config: str | None = None
) -> MultimodalSource:
    """A random-access source of one split, preparing the builder on first use."""
    if split.split("[", 1)[0] not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' (TFDS slices allowed); got {split!r}.")
    b = builder(name, data_dir, config)
    return MultimodalSource(b.as_data_source(split=split), name, split, dataset_info(name, config))


def standardise(modality: str, values: np.ndarray, spec: MultimodalSpec) -> np.ndarray:
    """``(values - mean) / std`` of one modality, as float32."""
    mean = np.asarray(spec.mean[modality], np.float32)
    std = np.asarray(spec.std[modality], np.float32)
    return (np.asarray(values, np.float32) - mean) / std


def load_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None, config: str | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A whole split in memory: standardised float32 inputs per modality, int32 labels.

    Meant for the small offline set (and evaluation subsets): CREMA-D's test split alone is
    about 0.2 GB per stored frame.
    """
    source = get_source(name, split, data_dir, config)
    examples = [source[i] for i in range(len(source))]
    spec = source.spec
    inputs = {m: standardise(m, np.stack([x[m] for x in examples]), spec) for m in spec.modalities}
    labels = np.asarray([x["label"] for x in examples], np.int32)
    return inputs, labels


def measure_dominance(
    name: str = "digits_two_view", data_dir: str | os.PathLike | None = None
) -> dict[str, float]:
    """Test accuracy of a linear classifier fitted on each view alone and on all views
    concatenated: scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr",
    shrinkage="auto")`` (Ledoit-Wolf shrinkage, closed form), train split -> test split."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x_tr, y_tr = load_arrays(name, "train", data_dir)
    x_te, y_te = load_arrays(name, "test", data_dir)
    out = {}
    groups = {m: [m] for m in x_tr} | {"all": sorted(x_tr)}
    for key, members in groups.items():
        a = np.concatenate([x_tr[m].reshape(len(y_tr), -1) for m in members], axis=1)
        b = np.concatenate([x_te[m].reshape(len(y_te), -1) for m in members], axis=1)
        clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(a, y_tr)
        out[key] = float(clf.score(b, y_te))
    return out


# ---------------------------------------------------------------------------------------------
# grain pipeline


def random_resized_crop(
    frame: np.ndarray, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
    """torchvision's ``RandomResizedCrop`` (10 tries, then a centre crop) back to the frame's
    size, bilinear."""
    from PIL import Image

    h, w = frame.shape[:2]
    area = h * w
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = round(np.sqrt(target * aspect)), round(np.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            box = (left, top, left + cw, top + ch)
            break
    if box is None:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        box = (left, top, left + side, top + side)
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR, box=box))


class _Batch(grain.transforms.MapWithIndex):
    """Global step -> this process's part of the global batch, augmented and standardised."""

    def __init__(self, examples, n, batch, steps, shard, spec, augment, seed, dropout):
        self.examples, self.n, self.batch, self.steps = examples, n, batch, steps
        self.shard_index, self.shard_count = shard
        self.spec, self.augment, self.seed, self.dropout = spec, augment, seed, dropout

    def positions(self, step: int) -> range:
        epoch, t = divmod(step, self.steps)
        start = t * self.batch
        size = min(self.batch, self.n - start)
        q, r = divmod(size, self.shard_count)
        lo = self.shard_index * q + min(self.shard_index, r)
        hi = lo + q + (self.shard_index < r)
        return range(epoch * self.n + start + lo, epoch * self.n + start + hi)

    def map_with_index(self, index: int, element: Any) -> dict[str, np.ndarray]:
        del element
        positions = self.positions(index)
        items = [self.examples[p] for p in positions]
        out = {}
        for m in self.spec.modalities:
            arrays = [np.asarray(x[m]) for x in items]
            if self.augment and m in self.spec.redraw:
                for j, p in enumerate(positions):
                    rng = np.random.default_rng([self.seed, p, 2])
                    arrays[j] = self.spec.redraw[m](items[j], rng)
            if self.augment and m in self.spec.frames:
                for j, p in enumerate(positions):
                    rng = np.random.default_rng([self.seed, p])
                    clip = [random_resized_crop(f, rng) for f in arrays[j]]
                    if rng.random() < 0.5:
                        clip = [f[:, ::-1] for f in clip]
                    arrays[j] = np.stack(clip)
            stacked = (
                np.stack(arrays) if arrays else np.zeros((0, *self.spec.shapes[m]), np.float32)
            )
            out[m] = standardise(m, stacked, self.spec)
        out["label"] = np.asarray([int(x["label"]) for x in items], np.int32)
        if self.dropout is not None:
            out["keep"] = np.repeat(
                modality_keep(self.dropout(index), len(self.spec.modalities), self.seed, index)[
                    None
                ],
                len(items),
                axis=0,
            )
        return out


def modality_keep(p: float, num_modalities: int, seed: int, step: int) -> np.ndarray:
    """Modality dropout of one step: a float32 mask ``(M,)`` with at most one zero.

    With ``u ~ U(0, 1)`` drawn from ``np.random.default_rng([seed, step, 1])``, modality ``i``
    (sorted order) is dropped when ``i p / M <= u < (i + 1) p / M``: each modality with
    probability ``p / M``, never two at once (for ``M = 2`` the rule of the RedReg code).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality dropout probability must lie in [0, 1]; got {p!r}.")
    u = np.random.default_rng([seed, step, 1]).random()
    keep = np.ones((num_modalities,), np.float32)
    if u < p:
        keep[min(int(u * num_modalities / p), num_modalities - 1)] = 0.0
    return keep


def make_iterator(
    source: MultimodalSource,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    augment: bool = False,
    drop_remainder: bool = True,
    shard_by_process: bool | tuple[int, int] = True,
    modality_dropout: Callable[[int], float] | None = None,
    read_options: grain.ReadOptions | None = None,
) -> grain.DatasetIterator:
    """Checkpointable iterator of process-local batches.

    Batches are ``{m: float32 (b, ...) for each modality m, "label": int32 (b,)}``, plus
    ``"keep": float32 (b, M)`` (1 keep, 0 drop, the same for every example of a step; see
    :func:`modality_keep`) when ``modality_dropout`` -- a function of the global step giving
    the dropout probability -- is set. Global order and sharding follow
    ``redundax.data.make_iterator``: one seeded permutation per epoch, contiguous shares per
    process. Augmentation (``augment``: frames cropped and flipped, ``spec.redraw`` modalities
    re-drawn) is seeded by the position in that order.
    """
    spec = source.spec
    n = len(source)
    reserved = {"label", "keep", "mask"} & set(spec.modalities)
    if reserved:
        raise ValueError(f"modality names may not be {sorted(reserved)}; rename them.")
    if not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ValueError(f"global_batch_size must be a positive int; got {global_batch_size!r}.")
    shard = resolve_shard(shard_by_process)
    if global_batch_size % shard[1]:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the process count "
            f"{shard[1]}."
        )
    if drop_remainder and global_batch_size > n:
        raise ValueError(
            f"global_batch_size={global_batch_size} exceeds the {n} examples of the split; "
            "lower it or pass drop_remainder=False."
        )
    seed = int(np.random.SeedSequence([int(seed), 7]).generate_state(1)[0])
    examples = grain.MapDataset.source(source)
    if shuffle:
        examples = examples.shuffle(seed=seed)
    steps = steps_per_epoch(n, global_batch_size, drop_remainder)
    batches = grain.MapDataset.range(steps).repeat(num_epochs)
    ds = batches.map_with_index(
        _Batch(examples, n, global_batch_size, steps, shard, spec, augment, seed, modality_dropout)
    )
    if read_options is None:
        read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    return iter(ds.to_iter_dataset(read_options))
