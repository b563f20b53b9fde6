"""Structured channel pruning and transformer layer removal.

- `graph`: channel dependency graphs (which conv writes/reads which channels; residual coupling and
  depthwise cascades) for VGG, MobileNetV2 and CIFAR ResNet, and BatchNorm-zeroing masks.
- `flops`: architecture-aware multiply-accumulate counts under masks.
- `latency`: measured CPU/accelerator latency of physically shrunk networks (compiled forward,
  median of round-robin repeats) and the MACs of the timed program.
- `channels`: pruning scores, global-threshold masks at the paper's sparsities, lesions, peer
  replacement, recovery fine-tuning, physical shrinking, FLOPs-matched AUC (Safaai et al., Sec. 4).
- `layers`: layer-removal criteria (redundancy score R_l, block influence, random LayerDrop, knowledge
  entropy, last-k), pruned checkpoints that reload, the distillation loss of recovery.
- `finetune`: (recovery) fine-tuning on the training engine: resumable shuffled batches, the
  optimizer section with a warm-up fraction, checkpoints, data-parallel steps.
- `layer_study`: the sentence-embedding study of layer pruning (corpus, scores, report).
"""
