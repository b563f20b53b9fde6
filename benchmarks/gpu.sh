#!/usr/bin/env bash
# Every GPU number of the project in one command (benchmarks/gpu.py): functionals at activation
# sizes, the MAE ViT-Base/16 step (images/s, MFU), RedReg and OGM-GE on the 22.4M tree, channel
# metrics of ResNet-18 on 5000 images. Without a GPU it runs a tiny pass of the same code and
# exits 0. Arguments go to benchmarks/gpu.py (--repeats, --out_dir, --tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.gpu "$@"
