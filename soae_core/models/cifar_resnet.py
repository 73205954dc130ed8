"""ResNet-18 with the CIFAR stem (3×3 stride-1 first conv, no max-pool) for 32×32 images."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from soae_core.models.normalize import Normalize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CifarResNet18(ResNet):
    """torchvision's ResNet-18 with the CIFAR stem; input (N, 3, 32, 32) in [0, 1] → logits.

    The state-dict keys are torchvision's (``conv1.weight``, ``layer1.0.bn1.weight``, …, ``fc.weight``);
    the normalisation buffers are not saved, so plain torchvision-style CIFAR checkpoints load.
    """

    def __init__(self, num_classes: int = 10, mean: tuple[float, ...] = CIFAR10_MEAN,
                 std: tuple[float, ...] = CIFAR10_STD) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(x))
