"""What the page analyses share: the one-image check, the model's probabilities on one image, and
a NumPy image (as the app holds it) turned into the model's input."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from soae_core.attacks.base import num_classes_of
from soae_core.validation import check_images, check_int


def image_batch(image: np.ndarray, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """One image (C, H, W) in [0, 1] as a batch (1, C, H, W) of ``dtype`` on ``device`` (copied only when needed)."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=dtype).unsqueeze(0)


def check_single_image(model: nn.Module, image: torch.Tensor, label: int, num_classes: int | None = None) -> torch.Tensor:
    """ValueError unless ``image`` is one image (1, C, H, W) in [0, 1] and 0 ≤ label < K, the
    model's number of classes (one forward pass finds K unless ``num_classes`` gives it). Returns
    the label as a (1,) int64 tensor on the image's device."""
    check_images(image, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image must hold exactly one image (1, C, H, W), got shape {tuple(image.shape)}")
    label = check_int("label", label, minimum=0)
    if num_classes is None:
        num_classes = num_classes_of(model, image)
    if label >= num_classes:
        raise ValueError(f"label must be a class index in [0, {num_classes - 1}], got {label}")
    return torch.tensor([label], dtype=torch.long, device=image.device)


def class_probabilities(model: nn.Module, image: torch.Tensor) -> np.ndarray:
    """Softmax (K,) float64 of the model on one image (1, C, H, W)."""
    with torch.no_grad():
        return torch.softmax(model(image), dim=1)[0].double().cpu().numpy()
