"""The small Fashion-MNIST CNN (2 conv + pooling + 2 FC) and its smooth twin.

The ReLU/max-pool net is piecewise linear in its input, so the input Hessian of its
cross-entropy loss is Jᵀ(diag(p) − ppᵀ)J with rank ≤ C−1. The smooth twin swaps ReLU for
SiLU and max-pooling for average pooling, so the network is C∞ in its input and its input
Hessian has a full-rank, indefinite part (average pooling also avoids the max-pool ties on
Fashion-MNIST's exactly-zero backgrounds, which break finite-difference products).
"""

from __future__ import annotations

import torch
from torch import nn

from soae_core.models.normalize import Normalize
from soae_core.validation import check_choice

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "softplus": nn.Softplus}
POOLINGS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}

# Fashion-MNIST training-set pixel mean and standard deviation (of [0, 1] images).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


class SmallCNN(nn.Module):
    """Input (N, 1, 28, 28) in [0, 1] → logits (N, num_classes).

    conv3×3(16) → act → pool2 → conv3×3(32) → act → pool2 → FC(128) → act → FC(num_classes),
    with the dataset normalisation as the first layer. 16/32 channels (not 32/64) keep an
    adversarial-training epoch affordable on 2 CPU cores (measured ~3× cheaper per batch).
    """

    def __init__(self, activation: str = "relu", pooling: str = "max", num_classes: int = 10,
                 mean: tuple[float, ...] = FASHION_MNIST_MEAN, std: tuple[float, ...] = FASHION_MNIST_STD) -> None:
        super().__init__()
        act = ACTIVATIONS[check_choice("activation", activation, tuple(ACTIVATIONS))]
        pool = POOLINGS[check_choice("pooling", pooling, tuple(POOLINGS))]
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1), act(), pool(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1), act(), pool(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), act(), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))
