"""grain input pipeline: seeded shuffle, per-process sharding, augmentation, standardisation.

One global order serves every process. Epoch ``e`` visits the examples in a permutation drawn
from ``seed`` and ``e`` alone (grain's index shuffle), identical on every process. Global step
``t`` of the epoch takes positions ``[t * B, (t + 1) * B)`` of that order (``B`` the global
batch size) and process ``p`` of ``P`` takes the ``p``-th contiguous ``B / P`` of them, so the
process-local batches of a step, stacked in process order, are exactly the batch a single
process would see with the same global batch size; augmentation draws its randomness from
``seed`` and the position in the global order, so it agrees too. With ``drop_remainder`` the
last ``n mod B`` positions of every epoch are skipped (a different remainder each epoch);
without it the final, partial global batch is split into ``P`` near-equal contiguous parts
(``np.array_split``; a part may be empty), so every process yields the same number of batches.

The pipeline is a :class:`grain.MapDataset` (``source -> shuffle -> random_map(augment) ->
per-step local batch -> repeat``) turned into an iterator by ``to_iter_dataset``, with threads
but no worker processes; its state is the index of the next batch, so ``get_state`` /
``set_state`` (and ``grain.checkpoint.CheckpointSave`` / ``CheckpointRestore`` in orbax)
resume it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import grain
import numpy as np


class DatasetSpec(NamedTuple):
    """What the pipeline needs to know about an image classification dataset.

    Attributes:
      image_shape: ``(height, width, channels)`` of one stored image.
      num_classes: number of label classes.
      mean: per-channel mean of the training images, in stored pixel units.
      std: per-channel standard deviation of the training images, in stored pixel units.
      crop_padding: zero padding of the random crop used when augmenting; 0 disables it.
      hflip: whether augmentation flips images horizontally with probability 1/2.
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    hflip: bool = False


class RandomAccessSource(Protocol):
    """``len(source)`` examples; ``source[i]`` is a dict with ``"image"`` and ``"label"``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


def standardise(images: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """``(images - mean) / std`` per channel, as ``float32``."""
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    return (np.asarray(images, np.float32) - mean) / std


def random_crop_flip(
    image: np.ndarray, rng: np.random.Generator, padding: int, hflip: bool
) -> np.ndarray:
    """Random crop of the zero-padded image, then a horizontal flip with probability 1/2.

    The image ``(h, w, c)`` is padded with ``padding`` zeros on every side and an ``h x w``
    window is taken at offsets drawn uniformly from ``{0, ..., 2 * padding}`` in each axis
    (the standard CIFAR augmentation with ``padding=4``, He et al., 2016, Sec. 4.2).
    """
    h, w = image.shape[:2]
    u = rng.random(3)  # row offset, column offset, flip
    out = image
    if padding > 0:
        # Window rows [sy, sy + h) and columns [sx, sx + w) in the unpadded image's coordinates.
        sy, sx = (int(v * (2 * padding + 1)) - padding for v in u[:2])
        out = np.zeros_like(image)
        y0, y1, x0, x1 = max(sy, 0), min(sy + h, h), max(sx, 0), min(sx + w, w)
        if y0 < y1 and x0 < x1:
            out[y0 - sy : y1 - sy, x0 - sx : x1 - sx] = image[y0:y1, x0:x1]
    if hflip and u[2] < 0.5:
        out = out[:, ::-1]
    return out.copy() if out is image or not out.flags.c_contiguous else out


def steps_per_epoch(num_examples: int, global_batch_size: int, drop_remainder: bool = True) -> int:
    """Global batches per epoch: ``n // B`` with ``drop_remainder``, else ``ceil(n / B)``."""
    if drop_remainder:
        return num_examples // global_batch_size
    return -(-num_examples // global_batch_size)


def resolve_shard(shard_by_process: bool | tuple[int, int]) -> tuple[int, int]:
    """``(shard_index, shard_count)``: the JAX process for ``True``, ``(0, 1)`` for ``False``,
    or an explicit pair."""
    if isinstance(shard_by_process, bool):
        if not shard_by_process:
            return 0, 1
        import jax

        return jax.process_index(), jax.process_count()
    try:
        index, count = (int(v) for v in shard_by_process)
    except (TypeError, ValueError):
        raise ValueError(
            "shard_by_process must be True, False or a pair (shard_index, shard_count); got "
            f"{shard_by_process!r}."
        ) from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"shard_by_process=({index}, {count}) needs shard_count >= 1 and "
            "0 <= shard_index < shard_count."
        )
    return index, count


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _derived_seed(seed: int, stream: int) -> int:
    # grain's shuffle uses seed + epoch for epoch `epoch`; hashing the user seed keeps nearby
    # seeds (0, 1, 2, ...) from replaying each other's permutations one epoch later.
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


class _Augment(grain.transforms.RandomMap):
    def __init__(self, padding: int, hflip: bool):
        self.padding, self.hflip = padding, hflip

    def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict:
        image = random_crop_flip(np.asarray(element["image"]), rng, self.padding, self.hflip)
        return {**element, "image": image}


class _LocalBatch(grain.transforms.MapWithIndex):
    """Global step -> this process's part of the global batch, standardised."""

    def __init__(
        self,
        examples: grain.MapDataset,
        num_examples: int,
        global_batch_size: int,
        steps: int,
        shard: tuple[int, int],
        spec: DatasetSpec,
    ):
        self.examples, self.n, self.steps = examples, num_examples, steps
        self.batch = global_batch_size
        self.shard_index, self.shard_count = shard
        self.spec = spec

    def local_positions(self, step: int) -> range:
        """Positions in the global example order (all epochs) that ``step`` gives this shard."""
        epoch, t = divmod(step, self.steps)
        start = t * self.batch
        size = min(self.batch, self.n - start)
        q, r = divmod(size, self.shard_count)  # np.array_split sizes: q + 1 for the first r
        lo = self.shard_index * q + min(self.shard_index, r)
        hi = lo + q + (self.shard_index < r)
        offset = epoch * self.n + start
        return range(offset + lo, offset + hi)

    def map_with_index(self, index: int, element: Any) -> dict[str, np.ndarray]:
        del element  # the step number is `index`
        items = [self.examples[p] for p in self.local_positions(index)]
        if items:
            images = np.stack([np.asarray(x["image"]) for x in items])
        else:
            images = np.zeros((0, *self.spec.image_shape), np.uint8)
        labels = np.asarray([int(x["label"]) for x in items], np.int32)
        return {"image": standardise(images, self.spec), "label": labels}


def make_dataset(
    source: RandomAccessSource,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    augment: bool = False,
    drop_remainder: bool = True,
    shard_by_process: bool | tuple[int, int] = True,
    spec: DatasetSpec | None = None,
) -> grain.MapDataset:
    """The random-access dataset of process-local batches behind :func:`make_iterator`.

    Element ``k`` is the local part of global step ``k`` (counted over all epochs);
    ``len()`` is ``num_epochs * steps_per_epoch`` (``sys.maxsize`` when ``num_epochs`` is
    None). Arguments as in :func:`make_iterator`.
    """
    spec = spec if spec is not None else getattr(source, "spec", None)
    if not isinstance(spec, DatasetSpec):
        raise ValueError(
            "make_iterator needs the dataset's DatasetSpec (mean/std for standardisation): "
            "pass a source from redundax.data.get_source, or spec=dataset_info(name)."
        )
    n = len(source)
    if not _is_int(global_batch_size) or global_batch_size < 1:
        raise ValueError(
            f"global_batch_size must be a positive integer; got {global_batch_size!r}."
        )
    if num_epochs is not None and (not _is_int(num_epochs) or num_epochs < 1):
        raise ValueError(f"num_epochs must be a positive integer or None; got {num_epochs!r}.")
    global_batch_size = int(global_batch_size)
    shard = resolve_shard(shard_by_process)
    if global_batch_size % shard[1]:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the process count "
            f"{shard[1]}; choose a multiple of {shard[1]}."
        )
    if n == 0:
        raise ValueError("The source is empty: no examples to iterate over.")
    if drop_remainder and global_batch_size > n:
        raise ValueError(
            f"global_batch_size={global_batch_size} exceeds the {n} examples of the split, so "
            "drop_remainder=True would yield no batch; lower global_batch_size or pass "
            "drop_remainder=False."
        )
    seed = int(seed)
    examples = grain.MapDataset.source(source)
    if shuffle:
        examples = examples.shuffle(seed=_derived_seed(seed, 0))
    if augment and (spec.crop_padding > 0 or spec.hflip):
        examples = examples.random_map(
            _Augment(spec.crop_padding, spec.hflip), seed=_derived_seed(seed, 1)
        )
    steps = steps_per_epoch(n, global_batch_size, drop_remainder)
    batches = grain.MapDataset.range(steps).repeat(num_epochs)
    return batches.map_with_index(_LocalBatch(examples, n, global_batch_size, steps, shard, spec))


def make_iterator(
    source: RandomAccessSource,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    augment: bool = False,
    drop_remainder: bool = True,
    shard_by_process: bool | tuple[int, int] = True,
    spec: DatasetSpec | None = None,
    read_options: grain.ReadOptions | None = None,
) -> grain.DatasetIterator:
    """A checkpointable iterator over process-local batches.

    Args:
      source: random-access examples (``redundax.data.get_source``); ``source[i]`` is a dict
        with ``"image"`` ``(H, W, C)`` and an integer ``"label"``.
      global_batch_size: examples per step over all processes.
      seed: seeds the per-epoch permutation and the augmentation.
      shuffle: permute each epoch; otherwise the source order.
      num_epochs: passes over the data; None repeats forever.
      augment: random crop and flip as in ``spec`` (CIFAR: padding 4 and horizontal flip).
      drop_remainder: skip the last ``n mod global_batch_size`` examples of each epoch.
      shard_by_process: True for this JAX process's share, False for the whole global batch,
        or an explicit ``(shard_index, shard_count)``.
      spec: the dataset's :class:`DatasetSpec`; defaults to ``source.spec``.
      read_options: grain threading and prefetch (default: 2 threads, 4 batches ahead).

    Returns:
      A ``grain.DatasetIterator`` of ``{"image": float32 (b, H, W, C) standardised,
      "label": int32 (b,)}`` with ``b = global_batch_size // shard_count`` (smaller only in
      the final batch of an epoch when ``drop_remainder=False``).
    """
    ds = make_dataset(
        source,
        global_batch_size=global_batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        augment=augment,
        drop_remainder=drop_remainder,
        shard_by_process=shard_by_process,
        spec=spec,
    )
    if read_options is None:
        read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    return iter(ds.to_iter_dataset(read_options))
