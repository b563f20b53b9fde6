"""Layer pruning: removal, checkpoints, criteria, recovery and the experiment's smoke preset.

References: the encoder's own layers applied by hand (brute force), NumPy transcriptions of eq. 25,
ShortGPT block influence and knowledge entropy, and exact reload round trips.
"""

import importlib.util
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from redundax.functionals import entropy_rate as er
from redundax.models import bert, hf_loader
from redundax.prune import finetune as ft
from redundax.prune import layers as pl
from redundax.train import mesh as mesh_lib

HAS_MINILM = importlib.util.find_spec(hf_loader.MINILM_PACKAGE) is not None
TINY = bert.BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
    layer_norm_eps=1e-5,
)


@pytest.fixture(scope="module")
def tiny():
    return bert.BertEncoder(TINY, rngs=nnx.Rngs(0))


def _batch(seed: int, b: int = 6, t: int = 10):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, t + 1, size=b)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, rng.integers(1, TINY.vocab_size, size=(b, t)), 0).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _hidden(model, batch):
    fn, state = bert.make_hidden_fn(model)
    return np.asarray(
        fn(state, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    )


def _by_hand(model, batch, keep):
    """Embeddings, then the kept layers of the original model in order (no pruning code)."""
    mask = jnp.asarray(batch["attention_mask"], jnp.float32)
    bias = ((1.0 - mask) * jnp.finfo(jnp.float32).min)[:, None, None, :]
    x = model.embeddings(batch["input_ids"], batch["token_type_ids"], deterministic=True)
    out = [x]
    for i in keep:
        x = model.layers[i](x, bias, mask, deterministic=True)
        out.append(x)
    return np.asarray(jnp.stack(out))


def test_removing_no_layer_is_identity(tiny):
    batch = _batch(0)
    same = pl.remove_layers(tiny, [])
    assert same.num_layers == 4 and same.config == tiny.config
    np.testing.assert_array_equal(_hidden(same, batch), _hidden(tiny, batch))


@pytest.mark.parametrize("drop", [(0,), (1, 2), (0, 3), (3,)])
def test_removal_equals_kept_layers_by_hand(tiny, drop):
    batch = _batch(1)
    pruned = pl.remove_layers(tiny, drop)
    keep = [i for i in range(4) if i not in drop]
    assert pruned.num_layers == len(keep) and pruned.config.num_hidden_layers == len(keep)
    np.testing.assert_allclose(_hidden(pruned, batch), _by_hand(tiny, batch, keep), atol=1e-6)
    assert tiny.num_layers == 4  # the original is untouched


def test_pruned_checkpoint_reloads_with_same_outputs(tiny, tmp_path):
    src = tmp_path / "src"
    hf_loader.save_pretrained(tiny, src)
    (src / "tokenizer.json").write_text("{}")  # companion files are copied along
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    batch = _batch(2)
    stats = pl.collect_statistics(tiny, [batch, _batch(3)])
    drop = pl.select_layers("redundancy", 2, 4, stats)
    pruned = pl.remove_layers(tiny, drop)
    out = pl.save_pruned(
        pruned,
        tmp_path / "pruned",
        dropped=drop,
        original_num_layers=4,
        criterion="redundancy",
        statistics=stats,
        source_dir=src,
    )
    reloaded, record = pl.load_pruned(out)
    assert reloaded.num_layers == 2
    np.testing.assert_array_equal(_hidden(reloaded, batch), _hidden(pruned, batch))
    assert record["dropped_layers"] == list(drop) and record["criterion"] == "redundancy"
    assert record["kept_layers"] == [i for i in range(4) if i not in drop]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert (out / "tokenizer.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    # a pruned classifier keeps its head
    clf = bert.SequenceClassifier(TINY, 2, rngs=nnx.Rngs(1))
    pc = pl.remove_layers(clf, [0])
    pl.save_pruned(pc, tmp_path / "clf", dropped=[0], original_num_layers=4)
    rc, _ = pl.load_pruned(tmp_path / "clf", classifier=True)
    ids = batch["input_ids"]
    np.testing.assert_array_equal(
        np.asarray(rc(ids, batch["attention_mask"])), np.asarray(pc(ids, batch["attention_mask"]))
    )


def test_statistics_match_numpy_references(tiny):
    batches = [_batch(10), _batch(11), _batch(12)]
    stats = pl.collect_statistics(tiny, batches)
    hidden = [_hidden(tiny, b) for b in batches]
    # eq. 25 over M = 3 batches of mean-pooled states
    pooled = np.concatenate(
        [
            np.asarray(bert.mean_pool(h, b["attention_mask"]))
            for h, b in zip(hidden, batches, strict=True)
        ],
        axis=1,
    )
    ref_r = np.asarray(er.layer_redundancy_scores(pooled, batch_size=6))
    np.testing.assert_allclose(stats.redundancy, ref_r, rtol=1e-4)
    assert stats.num_batches == 3 and stats.num_pairs == 15
    # ShortGPT block influence: 1 - mean over real tokens of cos(x_i, x_{i+1})
    cos_sum, count = np.zeros(4), 0
    for h, b in zip(hidden, batches, strict=True):
        h = h.astype(np.float64)
        for r, c in zip(*np.nonzero(b["attention_mask"]), strict=True):
            for i in range(4):
                x, y = h[i, r, c], h[i + 1, r, c]
                cos_sum[i] += x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
            count += 1
    np.testing.assert_allclose(stats.block_influence, 1 - cos_sum / count, rtol=1e-4, atol=1e-6)
    assert stats.num_tokens == count
    # knowledge entropy from FFN coefficients recomputed with the layer's own sub-modules
    coef_sum = np.zeros((4, TINY.intermediate_size))
    for h, b in zip(hidden, batches, strict=True):
        mask = jnp.asarray(b["attention_mask"], jnp.float32)
        bias = ((1.0 - mask) * jnp.finfo(jnp.float32).min)[:, None, None, :]
        for i, layer in enumerate(tiny.layers):
            a = layer.attention(jnp.asarray(h[i]), bias, deterministic=True)
            c = np.abs(np.asarray(bert.ACTIVATIONS["gelu"](layer.intermediate(a)), np.float64))
            coef_sum[i] += (c * b["attention_mask"][..., None]).sum((0, 1))
    p = coef_sum / coef_sum.sum(1, keepdims=True)
    np.testing.assert_allclose(stats.knowledge_entropy, -(p * np.log(p)).sum(1), rtol=1e-5)
    assert np.all(stats.knowledge_entropy <= np.log(TINY.intermediate_size) + 1e-9)


def test_select_layers_rules():
    stats = pl.LayerStatistics(
        redundancy=np.array([0.1, 0.4, 0.4, 0.2, 0.05]),
        block_influence=np.array([0.3, 0.1, 0.2, 0.1, 0.9]),
        knowledge_entropy=np.array([5.0, 6.0, 7.0, 4.0, 8.0]),
        num_batches=1,
        num_pairs=1,
        num_tokens=1,
    )
    assert pl.select_layers("redundancy", 2, 5, stats) == (1, 2)  # highest R
    assert pl.select_layers("redundancy", 3, 5, stats) == (1, 2, 3)
    assert pl.select_layers("block_influence", 2, 5, stats) == (1, 3)  # lowest BI, tie -> lower
    assert pl.select_layers("knowledge_entropy", 2, 5, stats) == (2, 4)  # highest KE
    assert pl.select_layers("last", 2, 5) == (3, 4)
    assert pl.select_layers("redundancy", 0, 5, stats) == ()
    r = pl.select_layers("random", 3, 12, seed=7)
    assert r == pl.select_layers("random", 3, 12, seed=7) and len(set(r)) == 3
    assert list(r) == sorted(r) and all(0 <= i < 12 for i in r)
    draws = {pl.select_layers("random", 1, 4, seed=s) for s in range(40)}
    assert draws == {(0,), (1,), (2,), (3,)}
    with pytest.raises(ValueError, match="criterion"):
        pl.select_layers("slimllm", 1, 5, stats)
    with pytest.raises(ValueError, match="statistics"):
        pl.select_layers("redundancy", 1, 5)
    with pytest.raises(ValueError, match="k"):
        pl.select_layers("last", 5, 5)
    with pytest.raises(ValueError, match="drop"):
        pl.remove_layers(bert.BertEncoder(TINY, rngs=nnx.Rngs(0)), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        pl.remove_layers(bert.BertEncoder(TINY, rngs=nnx.Rngs(0)), [4])


def test_retrieval_and_fidelity_metrics():
    q = np.eye(4)
    p = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.3, 1], [0, 0, 1, 0.3]])
    # queries 2 and 3 find each other's passage first, their own second
    s = pl.retrieval_scores(q, p)
    assert s["recall@1"] == 0.5 and s["recall@5"] == 1.0 and s["mrr"] == pytest.approx(0.75)
    assert pl.embedding_fidelity(q, 3.0 * q) == pytest.approx(1.0)
    assert pl.embedding_fidelity(q, -q) == pytest.approx(-1.0)


def test_recovery_distillation_reduces_loss_and_keeps_original(tiny, tmp_path):
    batch = _batch(20, b=8)
    # targets the pruned encoder does not produce: random directions, cos ~ 0 at the start
    target = np.random.default_rng(0).normal(size=(8, TINY.hidden_size)).astype(np.float32)
    pruned = pl.remove_layers(tiny, [1, 2])
    before = _hidden(tiny, batch)
    train = {**batch, "target": target}

    def loss(model):
        emb = np.asarray(bert.mean_pool(_hidden(model, batch)[-1], batch["attention_mask"]))
        return 1 - pl.embedding_fidelity(emb, target)

    batches = ft.ShuffledBatches(8, 8, 0, lambda idx: {k: v[idx] for k, v in train.items()})
    optim = {"name": "adamw", "lr": 1e-2, "schedule": "linear", "warmup_fraction": 0.06}
    state = ft.finetune(
        pruned, pl.distillation_loss, batches, num_steps=20, optim_config=optim,
        mesh=mesh_lib.make_data_mesh(), rundir=tmp_path, progress=False,
    )  # fmt: skip
    recovered = ft.host_model(state)
    assert loss(pruned) > 0.7 and loss(recovered) < 0.5 * loss(pruned)
    np.testing.assert_array_equal(_hidden(tiny, batch), before)  # donation did not touch it
    assert pruned.num_layers == 2 and np.isfinite(loss(pruned))


@pytest.mark.skipif(
    not HAS_MINILM, reason=f"MiniLM weights not installed: {hf_loader.MINILM_INSTALL}"
)
def test_experiment_smoke(tmp_path):
    from configs.layers import get_config
    from experiments import layers as exp

    results = exp.run(get_config("smoke"), tmp_path)
    for name in (
        "results.json",
        "results.md",
        "metrics.jsonl",
        "redundancy_profile.png",
        "pruning_fidelity.png",
        "pruning_recall1.png",
    ):
        assert (tmp_path / name).is_file(), name
    saved = results["saved_checkpoint"]
    assert saved["reload_max_abs_diff"] == 0.0 and saved["num_layers"] == 2
    r = np.asarray(results["statistics"]["redundancy"])
    assert r.shape == (3,) and np.all((r > 0) & (r <= 0.5))
    assert {row["criterion"] for row in results["pruning"]} == set(get_config().prune.criteria)
    for row in results["pruning"]:
        assert -1 <= row["fidelity"] <= 1 and 0 <= row["recall@1"] <= 1
        assert "fidelity_recovered" in row
    assert pathlib.Path(saved["path"]).is_dir()


def test_glue_preset_errors_clearly(tmp_path):
    from configs.layers import get_config
    from experiments import layers as exp

    config = get_config("glue")
    with pytest.raises(ValueError, match="model_path"):
        exp.run(config, tmp_path)
    config.glue.model_path = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"config\.json"):
        exp.run(config, tmp_path)


@pytest.mark.slow  # about 15 s with a warm compilation cache, longer cold
def test_glue_protocol_runs_end_to_end_on_injected_data(tmp_path):
    """The glue preset's code path (fine-tune, per-epoch R_l and space-time scores, prune by each
    criterion, recover, task metric) on a tiny RoBERTa-type checkpoint and in-memory data."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from configs.layers import get_config
    from experiments import layers as exp

    words = [f"w{i}" for i in range(40)]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.enable_padding(pad_id=1, pad_token="<pad>")
    ckpt = tmp_path / "roberta_tiny"
    cfg = TINY.replace(
        model_type="roberta",
        pad_token_id=1,
        vocab_size=len(vocab),
        max_position_embeddings=40,
        type_vocab_size=1,
        num_hidden_layers=3,
    )
    hf_loader.save_pretrained(bert.BertEncoder(cfg, rngs=nnx.Rngs(0)), ckpt)
    tok.save(str(ckpt / "tokenizer.json"))

    rng = np.random.default_rng(0)

    def load_split(task, split, data_dir):
        n = 48 if split == "train" else 20
        a = [" ".join(rng.choice(words, size=rng.integers(3, 8))) for _ in range(n)]
        b = [" ".join(rng.choice(words, size=rng.integers(3, 8))) for _ in range(n)]
        return a, b, rng.integers(0, 2, size=n).astype(np.int32)

    config = get_config("glue")
    config.glue.model_path = str(ckpt)
    config.data.tasks = ("mrpc",)
    config.prune.criteria = ("redundancy", "random")
    config.prune.ks = (1,)
    config.glue.train.epochs = 2
    config.glue.train.recovery_epochs = 1
    config.data.batch_size = 8
    config.model.max_length = 16
    config.scores.batch_size = 8
    config.scores.num_batches = 2
    config.run.progress = False
    workdir = tmp_path / "run"
    results = exp.run(config, workdir, load_split=load_split)
    task = results["tasks"]["mrpc"]
    assert [r["criterion"] for r in task["rows"]] == ["none", "redundancy", "random"]
    for r in task["rows"]:
        assert 0.0 <= r["f1"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert len(r["removed"]) == (0 if r["criterion"] == "none" else 1)
    assert [e["epoch"] for e in task["epochs"]] == [1, 2]
    assert len(task["epochs"][0]["redundancy"]) == 3 and "spacetime_redundancy" in task["epochs"][1]
    st_scores = np.asarray(task["epochs"][1]["spacetime_redundancy"])
    assert np.all(st_scores >= np.asarray(task["epochs"][1]["redundancy"]) - 1e-6)
    assert (workdir / "results.md").is_file() and (workdir / "redundancy_profile.png").is_file()
