"""Multimodal data (two-view digits, CREMA-D / Kinetics-Sounds readers) and the fusion model."""

from __future__ import annotations

import json
import math
import wave

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.multimodal import get_config
from experiments import multimodal as exp
from redundax.data import multimodal as mm
from redundax.models import fusion
from redundax.multimodal import parse_methods


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mmdata")


# ----------------------------------------------------------------------------- two-view digits


def test_two_view_digits_views():
    from sklearn.datasets import load_digits

    images = load_digits().images[:50]
    views = mm.two_view_digits(images)
    assert views["coarse"].shape == (50, 4, 4, 1) and views["occluded"].shape == (50, 8, 8, 1)
    for i in range(0, 50, 7):  # coarse: block means, by brute force
        for r in range(4):
            for c in range(4):
                block = images[i, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
                assert views["coarse"][i, r, c, 0] == pytest.approx(block.mean(), rel=1e-6)
    again = mm.two_view_digits(images)
    np.testing.assert_array_equal(views["occluded"], again["occluded"])
    # where the digit is blank (occluded or not) the view is pure noise of std NOISE_STD
    full = mm.two_view_digits(load_digits().images)
    blank = load_digits().images == 0
    noise = full["occluded"][..., 0][blank]
    assert noise.std() == pytest.approx(mm.NOISE_STD, rel=0.03)
    assert abs(noise.mean()) < 0.05


def test_spec_constants_match_the_prepared_training_split(data_dir):
    source = mm.get_source("digits_two_view", "train", data_dir)
    assert len(source) == 1437 and len(mm.get_source("digits_two_view", "test", data_dir)) == 360
    spec = mm.dataset_info("digits_two_view")
    examples = [source[i] for i in range(len(source))]
    for m in spec.modalities:
        values = np.stack([x[m] for x in examples]).astype(np.float64)
        assert values.shape[1:] == spec.shapes[m]
        assert spec.mean[m] == pytest.approx(values.mean(), rel=1e-6)
        assert spec.std[m] == pytest.approx(values.std(), rel=1e-6)


def test_dominance_is_measured_as_documented(data_dir):
    acc = mm.measure_dominance("digits_two_view", data_dir)
    assert acc["coarse"] == pytest.approx(0.844, abs=0.002)
    assert acc["occluded"] == pytest.approx(0.658, abs=0.002)
    assert acc["all"] == pytest.approx(0.886, abs=0.002)
    assert acc["coarse"] - acc["occluded"] > 0.15  # one modality dominates
    assert acc["all"] > acc["coarse"]  # and the other still adds information


def test_iterator_standardises_resumes_and_redraws(data_dir):
    source = mm.get_source("digits_two_view", "train", data_dir)
    spec = source.spec
    it = mm.make_iterator(source, global_batch_size=100, seed=0, shuffle=False)
    batch = next(it)
    np.testing.assert_allclose(
        batch["occluded"][3],
        (source[3]["occluded"] - spec.mean["occluded"]) / spec.std["occluded"],
        rtol=1e-6,
    )
    assert batch["label"].dtype == np.int32 and set(batch) == {"coarse", "occluded", "label"}
    # resume from a saved iterator state
    it = mm.make_iterator(source, global_batch_size=64, seed=1, augment=True)
    for _ in range(3):
        next(it)
    saved = it.get_state()
    want = next(it)
    it2 = mm.make_iterator(source, global_batch_size=64, seed=1, augment=True)
    it2.set_state(saved)
    got = next(it2)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k])
    # augmentation re-draws the occluded view at every visit; the coarse view stays
    steps = 1437 // 100
    it = mm.make_iterator(source, global_batch_size=100, seed=0, shuffle=False, augment=True)
    first = next(it)
    for _ in range(steps - 1):
        next(it)
    second = next(it)  # the same examples, one epoch later
    np.testing.assert_array_equal(first["coarse"], second["coarse"])
    assert not np.allclose(first["occluded"], second["occluded"])


def test_modality_dropout_rule():
    draws = np.stack([mm.modality_keep(0.6, 2, seed=0, step=t) for t in range(4000)])
    assert (draws.sum(axis=1) >= 1).all()  # never both dropped
    np.testing.assert_allclose((draws == 0).mean(axis=0), [0.3, 0.3], atol=0.03)
    assert (np.stack([mm.modality_keep(0.0, 3, 0, t) for t in range(50)]) == 1).all()
    with pytest.raises(ValueError, match="probability"):
        mm.modality_keep(1.5, 2, 0, 0)


# ----------------------------------------------------------------------------- CREMA-D and KS


def test_log_spectrogram_matches_scipy_stft():
    from scipy.signal import stft

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, mm.CREMAD_RATE * mm.CREMAD_SECONDS)
    ours = mm.log_spectrogram(x)
    assert ours.shape == (257, 188)  # the shape of the OGM-GE audio input
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    _, _, z = stft(x, window=win, nperseg=512, noverlap=512 - 353, boundary="zeros", padded=True)
    ref = np.log(np.abs(z[:, :188] * win.sum()) + 1e-7)
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def _write_wav(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


def _write_jpg(path, value):
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), value, np.uint8)).save(path)


def test_cremad_builder_reads_the_ogm_ge_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="AudioWAV"):
        mm.get_source("cremad", "train", tmp_path)
    root = tmp_path / "downloads" / "manual" / "cremad"
    (root / "AudioWAV").mkdir(parents=True)
    rows = {
        "train": [("1001_A_ANG_XX", "ANG"), ("1002_B_NEU_XX", "NEU")],
        "test": [("1003_C_SAD_XX", "SAD")],
    }
    for split, items in rows.items():
        (root / f"{split}.csv").write_text("".join(f"{c},{e}\n" for c, e in items))
        for clip, _ in items:
            _write_wav(root / "AudioWAV" / f"{clip}.wav")
            frames = root / "Image-01-FPS" / clip
            frames.mkdir(parents=True)
            for k in range(2):
                _write_jpg(frames / f"{k:05d}.jpg", 50 + 100 * k)
    source = mm.get_source("cremad", "train", tmp_path)
    assert len(source) == 2
    ex = [source[i] for i in range(2)]
    labels = sorted(int(e["label"]) for e in ex)
    assert labels == sorted([mm.CREMAD_CLASSES.index("ANG"), mm.CREMAD_CLASSES.index("NEU")])
    assert ex[0]["audio"].shape == (257, 188, 1) and ex[0]["visual"].shape == (1, 224, 224, 3)
    # the audio is the spectrogram of the 16 kHz tone resampled to 22.05 kHz: the peak bin
    # sits at 440 Hz * 512 / 22050 = bin 10.2
    peak = int(np.argmax(ex[0]["audio"][:, 50, 0]))
    assert abs(peak - 440 * 512 / 22050) <= 1
    assert abs(int(ex[0]["visual"][0, 100, 100, 0]) - 150) <= 2  # the later of two frames
    inputs, y = mm.load_arrays("cremad", "test", tmp_path)
    assert y.tolist() == [mm.CREMAD_CLASSES.index("SAD")]
    expected = (150 - mm.IMAGENET_MEAN[0]) / mm.IMAGENET_STD[0]
    assert inputs["visual"][0, 0, 100, 100, 0] == pytest.approx(expected, abs=0.02)


def test_kinetics_sounds_builder_reads_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_spec"):
        mm.get_source("kinetics_sounds", "train", tmp_path)
    root = tmp_path / "downloads" / "manual" / "kinetics_sounds"
    layout = {
        "train": ("ks_train_overlap.txt", "train_spec", "train-frames-1fps/train"),
        "test": ("ks_test_overlap.txt", "test_spec", "val-frames-1fps/test"),
    }
    for split, (listing, spec_dir, frame_dir) in layout.items():
        (root / spec_dir).mkdir(parents=True)
        clips = [(f"{split}_clip{i}", 3 * i + 1) for i in range(2)]
        (root / listing).write_text("".join(f"{c} 10 {y}\n" for c, y in clips))
        for c, y in clips:
            np.save(root / spec_dir / f"{c}.npy", np.full((1024, 128), y, np.float32))
            frames = root / frame_dir / c
            frames.mkdir(parents=True)
            for k in range(1, 11):
                _write_jpg(
                    frames / f"frame_0000{k}.jpg" if k < 10 else frames / "frame_00010.jpg", 20 * k
                )
    # reference code: seg = 10 // 3 = 3, frame i at i * seg + max(seg // 2, 1) = 1, 4, 7
    assert mm.ks_frame_names(10) == ["frame_00001.jpg", "frame_00004.jpg", "frame_00007.jpg"]
    assert mm.ks_frame_names(5) == ["frame_00001.jpg"] * 3  # short clips: the first frame
    source = mm.get_source("kinetics_sounds", "train", tmp_path)
    ex = sorted((source[i] for i in range(len(source))), key=lambda e: int(e["label"]))
    assert [int(e["label"]) for e in ex] == [1, 4]
    assert float(ex[1]["audio"][0, 0, 0]) == 4.0
    assert ex[0]["visual"].shape == (3, 224, 224, 3)
    assert [
        abs(int(ex[0]["visual"][t, 5, 5, 0]) - 20 * k) <= 2 for t, k in enumerate((1, 4, 7))
    ] == [True] * 3


# ----------------------------------------------------------------------------- fusion model


def test_fusion_slices_sum_to_fused_logits_and_labels_cover_encoders():
    model = fusion.mlp_fusion(
        {"a": (4, 4, 1), "b": (8,)}, 5, hidden=7, features=6, rngs=nnx.Rngs(0)
    )
    x = {"a": jax.random.normal(jax.random.key(0), (3, 4, 4, 1)), "b": jnp.ones((3, 8))}
    out = model(x)
    np.testing.assert_allclose(sum(out.slice_logits.values()), out.logits, rtol=1e-5, atol=1e-6)
    assert out.features["a"].shape == (3, 6)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    labels = jax.tree.leaves(fusion.encoder_labels(params), is_leaf=lambda v: v is None)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for path, label in zip(paths, labels, strict=True):
        if "encoders" in path:
            assert label == ("a" if "'a'" in path else "b")
        else:
            assert label is None
    with pytest.raises(ValueError, match="missing"):
        model({"a": x["a"]})


def test_resnet18_encoder_size_and_frame_pooling():
    audio = fusion.ResNet18Encoder(1, rngs=nnx.Rngs(0))
    visual = fusion.ResNet18Encoder(3, frames=True, rngs=nnx.Rngs(1))
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    # torchvision's resnet18 has 11,689,512 parameters; without its 512x1000 classifier
    # 11,176,512, and with a one-channel stem 64 * 49 * 2 fewer.
    assert count(visual) == 11_176_512
    assert count(audio) == 11_176_512 - 64 * 49 * 2
    visual.eval()
    x = jax.random.normal(jax.random.key(0), (2, 3, 32, 32, 3))
    z = visual(x)
    assert z.shape == (2, 512)
    visual.frames = False
    per_frame = visual(x.reshape(6, 32, 32, 3)).reshape(2, 3, 512).mean(axis=1)
    np.testing.assert_allclose(z, per_frame, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- experiment


@pytest.mark.slow
def test_smoke_experiment_writes_every_output(tmp_path, data_dir):
    config = get_config("smoke")
    config.data.data_dir = str(data_dir)
    config.run.progress = False
    out = exp.run(config, tmp_path)
    methods = parse_methods(config.methods)
    assert list(out["table"]) == list(methods)
    for row in out["table"].values():
        for mean, std in row.values():
            assert math.isfinite(mean) and std == 0.0
        assert 0.1 < row["acc_fused"][0] <= 1.0
    for name in (
        "results.json",
        "results.md",
        "metrics.jsonl",
        "accuracy.png",
        "timeline_redreg.png",
    ):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["table"]["redreg"]["acc_fused"][0] == pytest.approx(
        out["table"]["redreg"]["acc_fused"][0]
    )
    # the RedReg run logged its internal signals every step window
    records = [
        json.loads(line) for line in (tmp_path / "runs" / "redreg-seed0" / "metrics.jsonl").open()
    ]
    assert any("train/beta/coarse" in r and "train/gate" in r for r in records)
    # a second call finds every run finished and only rebuilds the table
    again = exp.run(config, tmp_path)
    assert again["table"] == out["table"]
