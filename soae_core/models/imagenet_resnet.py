"""torchvision's ImageNet ResNet-18/50 taking [0, 1] images (ImageNet normalisation inside)."""

from __future__ import annotations

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from soae_core.models.normalize import Normalize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetResNet(ResNet):
    """torchvision ResNet (same state-dict keys as its official weights); input (N, 3, 224, 224) in [0, 1]."""

    def __init__(self, depth: int = 18, num_classes: int = 1000) -> None:
        if depth == 18:
            super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        elif depth == 50:
            super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
        else:
            raise ValueError(f"depth must be 18 or 50, got {depth}")
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(x))
