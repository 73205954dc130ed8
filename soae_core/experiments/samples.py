"""The bundled sample set (``python -m soae_core.make_samples`` writes assets/samples/fashion_mnist.npz).

The first ``per_class`` images of each class in the Fashion-MNIST *test* set (in test-set order),
stored as uint8 with their labels, class names and test-set indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soae_core.data import load_fashion_mnist
from soae_core.validation import check_int


def write_fashion_mnist_samples(path: Path, per_class: int = 20) -> Path:
    """Write ``per_class`` test images per class (ordered by class, then test index) to ``path``."""
    check_int("per_class", per_class)
    test = load_fashion_mnist("test")
    indices = torch.cat([torch.nonzero(test.labels == c).flatten()[:per_class] for c in range(len(test.class_names))])
    images = (test.images[indices, 0] * 255).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images, labels=test.labels[indices].numpy().astype(np.int64),
                        class_names=np.array(test.class_names), test_indices=indices.numpy().astype(np.int64))
    return path
