"""redundax.data: TFDS builders (digits, CIFAR binary archives) and the grain pipeline."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import tarfile
import threading
import urllib.error

import grain
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

import redundax.data as rd
from redundax.data import cifar, digits


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    rd.get_source("sklearn_digits", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def sk_digits():
    d = load_digits()
    return d.images.astype(np.uint8)[..., None], d.target.astype(np.int64)


def _raw(source):
    examples = source.__getitems__(range(len(source)))
    return np.stack([x["image"] for x in examples]), np.array([x["label"] for x in examples])


# ----------------------------------------------------------------------------- digits builder


def test_digits_splits_partition_sklearn_digits(digits_dir, sk_digits):
    images, labels = sk_digits
    train = rd.get_source("sklearn_digits", "train", digits_dir)
    test = rd.get_source("sklearn_digits", "test", digits_dir)
    assert (len(train), len(test)) == (1437, 360)
    x_tr, y_tr = _raw(train)
    x_te, y_te = _raw(test)
    assert x_tr.dtype == np.uint8 and x_tr.shape == (1437, 8, 8, 1)
    assert x_tr.max() == 16 and x_tr.min() == 0

    def multiset(x, y):
        return collections.Counter((xi.tobytes(), int(yi)) for xi, yi in zip(x, y, strict=True))

    # train + test hold exactly the 1,797 scikit-learn images with their labels.
    assert multiset(x_tr, y_tr) + multiset(x_te, y_te) == multiset(images, labels)
    # Stratified: each class's test count is its share of 360, rounded down or up.
    quota = 360 * np.bincount(labels) / len(labels)
    counts = np.bincount(y_te, minlength=10)
    assert np.all((counts == np.floor(quota)) | (counts == np.ceil(quota)))


def test_digits_split_is_fixed_and_in_original_order(digits_dir, sk_digits):
    images, labels = sk_digits
    train_idx, test_idx = digits.split_indices(labels)
    # The documented split (seed 0): pinned so that it can never change silently.
    assert hashlib.sha256(test_idx.astype("<i8").tobytes()).hexdigest()[:16] == "029b55daa6f2edd8"
    x_te, y_te = _raw(rd.get_source("sklearn_digits", "test", digits_dir))
    np.testing.assert_array_equal(x_te, images[test_idx])
    np.testing.assert_array_equal(y_te, labels[test_idx])
    x_tr, _ = _raw(rd.get_source("sklearn_digits", "train", digits_dir))
    np.testing.assert_array_equal(x_tr, images[train_idx])


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=6),
    frac=st.floats(0.05, 0.9),
    seed=st.integers(0, 2**31),
)
def test_split_indices_is_a_stratified_partition(counts, frac, seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    n = len(labels)
    num_test = min(max(1, round(frac * n)), n - 1)
    train, test = digits.split_indices(labels, num_test, seed)
    assert len(test) == num_test and len(train) == n - num_test
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    quota = num_test * np.bincount(labels) / n
    got = np.bincount(labels[test], minlength=len(counts))
    assert np.all((got == np.floor(quota)) | (got == np.ceil(quota)))


def test_digits_spec_matches_train_statistics(digits_dir):
    spec = rd.dataset_info("sklearn_digits")
    x_tr, _ = _raw(rd.get_source("sklearn_digits", "train", digits_dir))
    x = x_tr.astype(np.float64)
    np.testing.assert_allclose(spec.mean, [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(spec.std, [x.std()], rtol=1e-12)
    assert spec.image_shape == (8, 8, 1) and spec.num_classes == 10
    images, labels = rd.load_arrays("sklearn_digits", "train", digits_dir)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert abs(images.mean()) < 1e-5 and abs(images.std() - 1) < 1e-5


def test_load_arrays_standardises_the_raw_split(digits_dir):
    spec = rd.dataset_info("sklearn_digits")
    x_te, y_te = _raw(rd.get_source("sklearn_digits", "test", digits_dir))
    images, labels = rd.load_arrays("sklearn_digits", "test", digits_dir)
    np.testing.assert_allclose(images, (x_te - spec.mean[0]) / spec.std[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(labels, y_te)


def test_split_slicing_and_concatenation(digits_dir):
    head = rd.get_source("sklearn_digits", "train[:10]", digits_dir)
    full = rd.get_source("sklearn_digits", "train", digits_dir)
    both = rd.get_source("sklearn_digits", "train+test", digits_dir)
    assert len(head) == 10 and len(both) == 1797
    np.testing.assert_array_equal(head[3]["image"], full[3]["image"])


def test_unknown_name_and_split_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'mnist'.*sklearn_digits, cifar10, cifar100"):
        rd.get_source("mnist", "train", tmp_path)
    with pytest.raises(ValueError, match=r"'validation'.*train, test"):
        rd.get_source("sklearn_digits", "validation", tmp_path)
    with pytest.raises(ValueError, match="known datasets"):
        rd.dataset_info("imagenet")
    assert not any(tmp_path.iterdir())  # nothing was prepared


def test_data_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("REDUNDAX_DATA_DIR", str(tmp_path))
    assert rd.resolve_data_dir() == tmp_path
    assert rd.resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("REDUNDAX_DATA_DIR")
    assert str(rd.resolve_data_dir()).endswith("tensorflow_datasets")


def test_concurrent_preparation_is_safe(tmp_path):
    results, errors = [], []

    def prepare():
        try:
            results.append(len(rd.get_source("sklearn_digits", "test", tmp_path)))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [360, 360]


# ------------------------------------------------------------------------------ CIFAR builders


def _record_images(records: np.ndarray, num_label_bytes: int) -> np.ndarray:
    """HWC images from raw records by the documented byte layout, one pixel at a time."""
    out = np.empty((len(records), 32, 32, 3), np.uint8)
    for i, rec in enumerate(records):
        for c in range(3):
            for h in range(32):
                for w in range(32):
                    out[i, h, w, c] = rec[num_label_bytes + c * 1024 + h * 32 + w]
    return out


def _write_archive(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _records(rng, n, label_bytes):
    recs = rng.integers(0, 256, size=(n, label_bytes + 3072), dtype=np.uint8)
    if label_bytes == 1:
        recs[:, 0] %= 10  # CIFAR-10 label
    else:
        recs[:, 0] %= 20  # CIFAR-100 coarse label
        recs[:, 1] %= 100  # CIFAR-100 fine label
    return recs


def test_cifar10_binary_archive_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    batches = [_records(rng, 2 + i % 2, 1) for i in range(5)]
    test = _records(rng, 3, 1)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    members = {
        f"cifar-10-batches-bin/data_batch_{i + 1}.bin": b.tobytes() for i, b in enumerate(batches)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = test.tobytes()
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
    _write_archive(manual / "cifar-10-binary.tar.gz", members)

    train_recs = np.concatenate(batches)
    for split, recs in [("train", train_recs), ("test", test)]:
        source = rd.get_source("cifar10", split, tmp_path, download=False)
        x, y = _raw(source)
        assert x.dtype == np.uint8 and x.shape == (len(recs), 32, 32, 3)
        np.testing.assert_array_equal(x, _record_images(recs, 1))
        np.testing.assert_array_equal(y, recs[:, 0])
    b = rd.builder("cifar10", tmp_path, download=False)
    assert b.info.features["label"].names == names
    assert b.info.splits["train"].num_examples == len(train_recs)


def test_cifar100_binary_archive_round_trips_fine_and_coarse_labels(tmp_path):
    rng = np.random.default_rng(1)
    train, test = _records(rng, 4, 2), _records(rng, 3, 2)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    _write_archive(
        manual / "cifar-100-binary.tar.gz",
        {
            "cifar-100-binary/train.bin": train.tobytes(),
            "cifar-100-binary/test.bin": test.tobytes(),
        },
    )
    for split, recs in [("train", train), ("test", test)]:
        source = rd.get_source("cifar100", split, tmp_path, download=False)
        examples = source.__getitems__(range(len(source)))
        np.testing.assert_array_equal(
            np.stack([e["image"] for e in examples]), _record_images(recs, 2)
        )
        np.testing.assert_array_equal([e["label"] for e in examples], recs[:, 1])  # fine
        np.testing.assert_array_equal([e["coarse_label"] for e in examples], recs[:, 0])
    assert rd.dataset_info("cifar100").num_classes == 100


def test_missing_archive_names_file_directory_and_url(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    with pytest.raises(FileNotFoundError) as e:
        rd.get_source("cifar10", "train", tmp_path, download=False)
    msg = str(e.value)
    assert "cifar-10-binary.tar.gz" in msg and str(manual) in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in msg


def test_failed_download_gives_instructions_and_leaves_no_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(cifar.urllib.request, "urlopen", offline)
    manual = tmp_path / "downloads" / "manual"
    with pytest.raises(FileNotFoundError) as e:
        rd.get_source("cifar100", "test", tmp_path)
    msg = str(e.value)
    assert "cifar-100-binary.tar.gz" in msg and str(manual) in msg
    assert cifar.CIFAR100.url in msg and "no route to host" in msg
    assert list(manual.iterdir()) == []


def test_download_is_checked_against_size_and_sha256(tmp_path, monkeypatch):
    monkeypatch.setattr(
        cifar.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"not the archive")
    )
    with pytest.raises(ValueError, match="SHA-256"):
        cifar.download_archive(cifar.CIFAR10, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_damaged_archive_is_a_clear_error():
    with pytest.raises(ValueError, match="3073-byte records"):
        cifar.decode_records(b"\0" * 3000, 1)


# ------------------------------------------------------------------------------ augmentation


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    padding=st.integers(0, 4),
    hflip=st.booleans(),
    h=st.integers(3, 9),
    w=st.integers(3, 9),
    c=st.integers(1, 3),
)
def test_crop_flip_is_one_window_of_the_padded_image(seed, padding, hflip, h, w, c):
    image = np.random.default_rng(seed).integers(1, 256, size=(h, w, c), dtype=np.uint8)
    out = rd.random_crop_flip(image, np.random.default_rng(seed), padding, hflip)
    assert out.shape == image.shape and out.dtype == image.dtype
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    candidates = [
        (dy, dx, f)
        for dy in range(2 * padding + 1)
        for dx in range(2 * padding + 1)
        for f in ((False, True) if hflip else (False,))
        if np.array_equal(out, (lambda v: v[:, ::-1] if f else v)(padded[dy : dy + h, dx : dx + w]))
    ]
    assert len(candidates) >= 1  # nonzero pixels make the window identifiable


def test_crop_flip_draws_every_offset_and_flips_half_the_time():
    padding, draws = 2, 2000
    image = np.arange(1, 7 * 5 + 1, dtype=np.uint8).reshape(7, 5, 1)
    padded = np.pad(image, ((padding,) * 2, (padding,) * 2, (0, 0)))
    windows = {
        (dy, dx, f): (
            padded[dy : dy + 7, dx : dx + 5][:, ::-1] if f else padded[dy : dy + 7, dx : dx + 5]
        ).tobytes()
        for dy in range(5)
        for dx in range(5)
        for f in (False, True)
    }
    lookup = {v: k for k, v in windows.items()}
    rng = np.random.default_rng(0)
    seen = collections.Counter(
        lookup[rd.random_crop_flip(image, rng, padding, True).tobytes()] for _ in range(draws)
    )
    assert len(seen) == 50  # all 25 offsets, with and without flip
    flips = sum(v for k, v in seen.items() if k[2])
    assert abs(flips - draws / 2) < 4 * np.sqrt(draws / 4)  # 4 binomial sigmas


# ------------------------------------------------------------------------------ pipeline


N_INDEX = 100
INDEX_SPEC = rd.DatasetSpec(image_shape=(2, 2, 1), num_classes=7, mean=(0.0,), std=(1.0,))


class IndexSource:
    """Example i has every pixel equal to i and label i mod 7."""

    def __init__(self, n: int = N_INDEX):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": np.full((2, 2, 1), i, np.uint8), "label": np.int64(i % 7)}


def _indices(batch) -> np.ndarray:
    ids = batch["image"][:, 0, 0, 0].astype(np.int64)
    np.testing.assert_array_equal(batch["label"], ids % 7)
    return ids


def _take(it, k):
    return [next(it) for _ in range(k)]


def test_batches_have_the_agreed_types(digits_dir):
    source = rd.get_source("sklearn_digits", "train", digits_dir)
    batch = next(rd.make_iterator(source, global_batch_size=32, seed=0, augment=True))
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (32, 8, 8, 1)
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (32,)
    assert isinstance(rd.make_iterator(source, global_batch_size=32, seed=0), grain.DatasetIterator)


def test_each_epoch_is_a_fresh_seeded_permutation():
    kw = dict(global_batch_size=10, num_epochs=3, spec=INDEX_SPEC)
    batches = list(rd.make_iterator(IndexSource(), seed=3, **kw))
    assert len(batches) == 30
    epochs = np.concatenate([_indices(b) for b in batches]).reshape(3, N_INDEX)
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), np.arange(N_INDEX))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again = np.concatenate([_indices(b) for b in rd.make_iterator(IndexSource(), seed=3, **kw)])
    np.testing.assert_array_equal(again, epochs.ravel())
    other = np.concatenate([_indices(b) for b in rd.make_iterator(IndexSource(), seed=4, **kw)])
    assert not np.array_equal(other, epochs.ravel())
    # Nearby seeds do not replay each other's permutations one epoch later.
    other = other.reshape(3, N_INDEX)
    assert not np.array_equal(other[0], epochs[1]) and not np.array_equal(other[1], epochs[2])


def test_no_shuffle_keeps_source_order():
    it = rd.make_iterator(
        IndexSource(), global_batch_size=25, seed=0, shuffle=False, num_epochs=2, spec=INDEX_SPEC
    )
    ids = np.concatenate([_indices(b) for b in it])
    np.testing.assert_array_equal(ids, np.tile(np.arange(N_INDEX), 2))


def test_drop_remainder_skips_a_different_tail_each_epoch():
    it = rd.make_iterator(
        IndexSource(), global_batch_size=32, seed=0, num_epochs=4, spec=INDEX_SPEC
    )
    batches = list(it)
    assert len(batches) == 4 * rd.steps_per_epoch(N_INDEX, 32) == 12
    epochs = np.concatenate([_indices(b) for b in batches]).reshape(4, 96)
    assert all(len(set(e)) == 96 for e in epochs)
    assert len({frozenset(set(range(N_INDEX)) - set(e)) for e in epochs}) > 1


@pytest.mark.parametrize("global_batch_size, count", [(32, 2), (32, 4), (30, 3)])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_process_shards_are_disjoint_and_make_up_the_global_batch(
    global_batch_size, count, drop_remainder
):
    kw = dict(
        global_batch_size=global_batch_size,
        seed=7,
        num_epochs=2,
        drop_remainder=drop_remainder,
        spec=INDEX_SPEC,
    )
    whole = list(rd.make_iterator(IndexSource(), shard_by_process=False, **kw))
    shards = [
        list(rd.make_iterator(IndexSource(), shard_by_process=(p, count), **kw))
        for p in range(count)
    ]
    assert all(len(s) == len(whole) for s in shards)  # same number of steps everywhere
    assert len(whole) == 2 * rd.steps_per_epoch(N_INDEX, global_batch_size, drop_remainder)
    for step, batch in enumerate(whole):
        parts = [_indices(s[step]) for s in shards]
        if len(batch["label"]) == global_batch_size:
            assert all(len(p) == global_batch_size // count for p in parts)
        assert len(set(np.concatenate(parts))) == sum(map(len, parts))  # disjoint
        np.testing.assert_array_equal(np.concatenate(parts), _indices(batch))  # cover, in order
    if not drop_remainder:  # every example once per epoch
        per_epoch = len(whole) // 2
        ids = np.concatenate([_indices(b) for b in whole[:per_epoch]])
        np.testing.assert_array_equal(np.sort(ids), np.arange(N_INDEX))


def test_augmented_shards_match_the_unsharded_global_batch(digits_dir):
    source = rd.get_source("sklearn_digits", "train", digits_dir)
    kw = dict(global_batch_size=64, seed=11, augment=True)
    whole = _take(rd.make_iterator(source, shard_by_process=False, **kw), 3)
    parts = [_take(rd.make_iterator(source, shard_by_process=(p, 2), **kw), 3) for p in (0, 1)]
    for step in range(3):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                np.concatenate([parts[0][step][key], parts[1][step][key]]), whole[step][key]
            )


def test_augmentation_is_seeded_and_leaves_the_order_alone(digits_dir):
    source = rd.get_source("sklearn_digits", "train", digits_dir)
    spec = rd.dataset_info("sklearn_digits")

    def run(seed, augment):
        return _take(rd.make_iterator(source, global_batch_size=128, seed=seed, augment=augment), 2)

    a, b, plain = run(5, True), run(5, True), run(5, False)
    other = run(6, True)
    for x, y, z in zip(a, b, plain, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], z["label"])  # same order as without augment
    assert not np.array_equal(a[0]["image"], plain[0]["image"])
    assert not np.array_equal(a[0]["label"], other[0]["label"])
    # Each augmented image is a 1-pixel shift of its plain image, padded with raw zeros.
    zero = (0.0 - spec.mean[0]) / spec.std[0]
    raw, aug = plain[0]["image"][..., 0], a[0]["image"][..., 0]
    for x, y in zip(raw, aug, strict=True):
        padded = np.pad(x, 1, constant_values=zero)
        assert any(
            np.allclose(y, padded[dy : dy + 8, dx : dx + 8]) for dy in range(3) for dx in range(3)
        )


@pytest.mark.parametrize("augment, shard", [(False, False), (True, (1, 2))])
def test_iterator_state_resumes_exactly_across_epochs(digits_dir, augment, shard):
    source = rd.get_source("sklearn_digits", "test", digits_dir)  # 360 examples: 5 steps/epoch
    kw = dict(global_batch_size=64, seed=2, augment=augment, shard_by_process=shard)
    reference = _take(rd.make_iterator(source, **kw), 13)
    it = rd.make_iterator(source, **kw)
    _take(it, 7)  # past the first epoch boundary
    state = json.loads(json.dumps(it.get_state()))
    fresh = rd.make_iterator(source, **kw)
    fresh.set_state(state)
    # The next epoch boundary is at step 10.
    for want, got in zip(reference[7:], _take(fresh, 6), strict=True):
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])


def test_iterator_checkpoints_through_orbax(tmp_path, digits_dir):
    ocp = pytest.importorskip("orbax.checkpoint")
    source = rd.get_source("sklearn_digits", "test", digits_dir)
    kw = dict(global_batch_size=64, seed=9, augment=True)
    reference = _take(rd.make_iterator(source, **kw), 9)
    it = rd.make_iterator(source, **kw)
    _take(it, 4)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(4, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    fresh = rd.make_iterator(source, **kw)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.restore(
            4, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh))
        )
    for want, got in zip(reference[4:], _take(fresh, 5), strict=True):
        np.testing.assert_array_equal(got["image"], want["image"])


def test_steps_per_epoch_counts_the_batches_of_one_epoch():
    for n, b, drop in [
        (100, 32, True),
        (100, 32, False),
        (100, 25, True),
        (100, 25, False),
        (7, 3, False),
    ]:
        it = rd.make_iterator(
            IndexSource(n),
            global_batch_size=b,
            seed=0,
            num_epochs=1,
            drop_remainder=drop,
            spec=INDEX_SPEC,
        )
        batches = list(it)
        assert len(batches) == rd.steps_per_epoch(n, b, drop)
        assert sum(len(x["label"]) for x in batches) == (n // b * b if drop else n)


def test_pipeline_input_errors_name_the_argument(digits_dir):
    source = rd.get_source("sklearn_digits", "test", digits_dir)
    with pytest.raises(ValueError, match=r"global_batch_size=30 is not divisible .* 4"):
        rd.make_iterator(source, global_batch_size=30, seed=0, shard_by_process=(0, 4))
    with pytest.raises(ValueError, match=r"global_batch_size=512 exceeds the 360"):
        rd.make_iterator(source, global_batch_size=512, seed=0)
    assert (
        len(
            list(
                rd.make_iterator(
                    source, global_batch_size=512, seed=0, num_epochs=1, drop_remainder=False
                )
            )
        )
        == 1
    )
    with pytest.raises(ValueError, match="shard_by_process"):
        rd.make_iterator(source, global_batch_size=32, seed=0, shard_by_process=(2, 2))
    with pytest.raises(ValueError, match="num_epochs"):
        rd.make_iterator(source, global_batch_size=32, seed=0, num_epochs=0)
    with pytest.raises(ValueError, match="global_batch_size"):
        rd.make_iterator(source, global_batch_size=0, seed=0)
    with pytest.raises(ValueError, match="DatasetSpec"):
        rd.make_iterator(IndexSource(), global_batch_size=10, seed=0)
