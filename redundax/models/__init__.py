"""Flax NNX models, one module per family (imported on first access: `redundax.models.resnet`).

- `resnet`: CIFAR-style ResNets with basic blocks (He et al., 2016, Sec. 4.2).
- `vgg`: VGG-16 with BatchNorm for CIFAR-sized images.
- `mobilenet`: MobileNetV2 for CIFAR-sized images.
- `layers`: building blocks shared by the CNNs (a conv -> BatchNorm pair with capturable taps).
- `vit`: Vision Transformer building blocks (patches, 2-D sin-cos positions, pre-norm blocks).
- `mae`: the masked autoencoder with the spectral-redundancy objective (Bi, Zhu & Calhoun, eq. 2).
- `fusion`: the late-fusion multimodal classifier (per-modality encoders, unimodal heads).
- `bert`: a BERT / RoBERTa-family encoder returning every hidden state.
- `hf_loader`: HuggingFace-format checkpoints (`config.json` + `model.safetensors`), no PyTorch.
"""

from redundax import _lazy

__all__ = ["bert", "fusion", "hf_loader", "layers", "mae", "mobilenet", "resnet", "vgg", "vit"]

__getattr__, __dir__ = _lazy.attach(__name__, __all__)
