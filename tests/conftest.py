"""Shared fixtures: tiny deterministic models for engine tests (no files, no training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# One intra-op thread: on the 2-core machines two torch threads were 5-10x slower whenever
# anything else ran (measured by the training and app benchmarks), and tests run beside servers.
torch.set_num_threads(1)


def tiny_cnn(activation: type[nn.Module] = nn.ReLU, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A 1×8×8-input CNN with max-pooling and 5 classes, frozen, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), activation(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 16), activation(), nn.Linear(16, 5)).to(dtype)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def tiny_smooth_mlp(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A smooth (Softplus) MLP on 1×3×3 images with 4 classes, frozen, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 12), nn.Softplus(), nn.Linear(12, 4)).to(dtype)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


@pytest.fixture
def images_8x8() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 8, 8, generator=gen, dtype=torch.float64)
