"""Your own weights, round trip: what the app's "Your own weights (.safetensors)" upload does with the
file the training CLI writes. Run after training, e.g.

    python -m soae_core.train --model fmnist-cnn-std --epochs 1 --train-subset 6000 \\
        --eval-pgd-n 100 --eval-soae-n 20 --out-dir my_weights --no-progress
    python scripts/own_weights_roundtrip.py my_weights/fmnist-cnn-std.safetensors small-cnn

It reads the file's bytes as the browser sends them, builds the model exactly as the app does
(``soae_core.models.load_uploaded_model``: in memory, nothing written), and prints its record and its
accuracy on the bundled samples, which the app's pages use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from soae_core.data import load_samples
from soae_core.metrics import accuracy
from soae_core.models import load_uploaded_model


def main(argv: list[str]) -> int:
    """Print the upload's record and accuracy; exit 2 with the app's message for a refused file."""
    if len(argv) != 2:
        print("usage: python scripts/own_weights_roundtrip.py FILE.safetensors ARCHITECTURE", file=sys.stderr)
        return 2
    path, architecture = Path(argv[0]), argv[1]
    torch.set_num_threads(1)
    try:
        upload = load_uploaded_model(architecture, path.read_bytes(), path.name)
    except (OSError, ValueError) as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    samples = load_samples(upload.info.dataset)
    print(f"name in the app's model list: {upload.info.name}")
    print(f"metadata in the file: {upload.metadata}")
    print(f"accuracy on the {len(samples)} bundled samples: "
          f"{accuracy(upload.model, samples.images, samples.labels):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
