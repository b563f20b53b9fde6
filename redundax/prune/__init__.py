"""Structured channel pruning and transformer layer removal.

- `graph`: channel dependency graphs (which conv writes/reads which channels; residual coupling and
  depthwise cascades) for VGG, MobileNetV2 and CIFAR ResNet, and BatchNorm-zeroing masks.
- `flops`: architecture-aware multiply-accumulate counts under masks.
- `latency`: measured CPU/accelerator latency of physically shrunk networks (compiled forward,
  median of round-robin repeats) and the MACs of the timed program.
- `channels`: pruning scores, global-threshold masks at the paper's sparsities, lesions, peer
  replacement, physical shrinking, FLOPs-matched AUC (Safaai et al., Sec. 4).
- `recovery`: base training, masked recovery fine-tunes and evaluation on the engine
  (`redundax.train`: data mesh, checkpoints, `optim.build`, `keep_pruned_zero`).
- `methods`: the pruning-method registry (`METHODS`, `method_scores`).
- `lesion`: single-channel lesions with peer replacement (`lesion_probe`).
- `curves`: pruning curves (`pruning_curves`, `latency_fields`) and their AUC summaries.
- `report`: the channels experiment's Markdown tables.
- `layers`: layer-removal criteria (redundancy score R_l, block influence, random LayerDrop, knowledge
  entropy, last-k), pruned checkpoints that reload, the distillation loss of recovery.
- `finetune`: (recovery) fine-tuning on the training engine: resumable shuffled batches, the
  optimizer section with a warm-up fraction, checkpoints, data-parallel steps.
- `layer_study`: the sentence-embedding study of layer pruning (corpus, scores, report).

The main names are re-exported here: `from redundax.prune import method_scores, pruning_curves`.
"""

from redundax.prune.curves import latency_fields, latency_summary, pruning_curves, summarise
from redundax.prune.lesion import lesion_probe
from redundax.prune.methods import METHODS, ScoreInputs, method_scores
from redundax.prune.recovery import ArrayStream, Recoveries, evaluate, train

__all__ = [
    "METHODS",
    "ArrayStream",
    "Recoveries",
    "ScoreInputs",
    "evaluate",
    "latency_fields",
    "latency_summary",
    "lesion_probe",
    "method_scores",
    "pruning_curves",
    "summarise",
    "train",
]
