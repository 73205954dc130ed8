"""Writers for small dataset files in the real on-disk layouts (IDX, CIFAR-10 pickles), for tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def idx_images_bytes(images: np.ndarray) -> bytes:
    """IDX3 (magic 2051): big-endian count, rows, cols, then uint8 pixels."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels_bytes(labels: np.ndarray) -> bytes:
    """IDX1 (magic 2049): big-endian count, then uint8 labels."""
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def random_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random 28×28 uint8 images and labels 0…9 (every class present when n ≥ 10)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), np.arange(n) % 10


def write_idx_dataset(folder: Path, n_train: int, n_test: int, gz: bool = False) -> dict[str, np.ndarray]:
    """Write train/t10k images and labels as IDX files (optionally .gz) into ``folder``; returns the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = random_split(n, seed)
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
        for name, data in ((f"{prefix}-images-idx3-ubyte", idx_images_bytes(images)),
                           (f"{prefix}-labels-idx1-ubyte", idx_labels_bytes(labels))):
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays


def write_cifar10(root: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    """Write the cifar-10-batches-py layout (5 train batches, test batch, meta) with random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        arrays[name] = data
        arrays[f"{name}_labels"] = np.array(labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes}, f)
    return arrays
