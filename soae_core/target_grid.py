"""The source × target grid: one image per class, attacked towards every other class.

For a model with K classes it shows K × K adversarial images (10 × 10 for Fashion-MNIST): row i
starts from the image of class i, column j is the target class j, the diagonal holds the clean
images. Each cell records whether the model now predicts the target, before and after 8-bit
rounding. Images are float tensors (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from soae_core.attacks.base import Attack
from soae_core.attacks.counting import predict
from soae_core.eight_bit import to_8bit
from soae_core.targets import attack_succeeded
from soae_core.validation import check_images


@dataclass
class TargetGrid:
    """Every source image attacked towards every class: row i = the image of class i, column j = target j.

    images: (K, K, C, H, W) float32 in [0, 1]; the diagonal holds the clean images.
    predictions, predictions_8bit: (K, K) int64, the model's class before/after 8-bit rounding
        (diagonal: the clean prediction).
    success, success_8bit: (K, K) bool, prediction = target (False on the diagonal).
    source_index: (K,) where row i's image sits in the input batch. attack: the attack's name.
    grad_evals: input-gradient evaluations per attacked image.
    """

    images: np.ndarray
    predictions: np.ndarray
    predictions_8bit: np.ndarray
    success: np.ndarray
    success_8bit: np.ndarray
    source_index: np.ndarray
    attack: str
    grad_evals: int

    @property
    def success_rate(self) -> float:
        """Share of the K·(K − 1) off-diagonal pairs whose target was reached."""
        k = self.success.shape[0]
        return float(self.success.sum()) / max(k * (k - 1), 1)

    @property
    def success_rate_8bit(self) -> float:
        """The same after 8-bit rounding."""
        k = self.success_8bit.shape[0]
        return float(self.success_8bit.sum()) / max(k * (k - 1), 1)


def one_image_per_class(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Index of the first image of each class 0 … K−1 in ``labels`` (ValueError naming missing classes)."""
    labels = torch.as_tensor(labels).tolist()
    missing = [c for c in range(num_classes) if c not in labels]
    if missing:
        raise ValueError(f"the images hold no example of class(es) {missing}; the grid needs one image per class")
    return [labels.index(c) for c in range(num_classes)]


def source_target_grid(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       make_attack: Callable[[nn.Module], Attack],
                       progress: Callable[[int, int], None] | None = None) -> TargetGrid:
    """Attack each of K source images (K, C, H, W) in [0, 1] towards each of the other K − 1 classes.

    labels: (K,) the true classes, one image of each of the model's K classes in any order; the
    grid's rows and columns both follow class order, so its diagonal holds the clean images.
    make_attack(model) must build a targeted attack (``targeted=True``). One batched attack per
    row; progress(done_rows, K) after each.
    """
    check_images(images, "images")
    labels = torch.as_tensor(labels, dtype=torch.long, device=images.device)
    k = images.shape[0]
    with torch.no_grad():
        num_classes = int(model(images[:1]).shape[1])
    if sorted(labels.tolist()) != list(range(num_classes)) or k != num_classes:
        raise ValueError(f"the grid needs exactly one image of each of the model's {num_classes} classes; "
                         f"got labels {labels.tolist()}")
    order = labels.argsort()
    images, labels = images.detach()[order], labels[order]
    attack = make_attack(model)
    if not getattr(attack, "targeted", False):
        raise ValueError(f"make_attack must build a targeted attack (targeted=True); {attack.name} is untargeted")
    cells = images[:, None].repeat(1, k, 1, 1, 1)
    grad_evals = 0
    for i in range(k):
        others = torch.tensor([j for j in range(k) if j != i], device=images.device)
        result = attack(images[i:i + 1].expand(k - 1, -1, -1, -1).contiguous(), others)
        cells[i, others] = result.adv
        grad_evals = max(grad_evals, int(result.grad_evals))
        if progress is not None:
            progress(i + 1, k)
    flat = cells.flatten(0, 1)
    predictions, predictions_8bit = predict(model, flat).view(k, k), predict(model, to_8bit(flat)).view(k, k)
    targets = torch.arange(k, device=images.device).expand(k, k)
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=images.device)
    success = attack_succeeded(predictions, labels[:, None], targets) & off_diagonal
    success_8bit = attack_succeeded(predictions_8bit, labels[:, None], targets) & off_diagonal
    return TargetGrid(images=cells.float().cpu().numpy(), predictions=predictions.cpu().numpy(),
                      predictions_8bit=predictions_8bit.cpu().numpy(), success=success.cpu().numpy(),
                      success_8bit=success_8bit.cpu().numpy(), source_index=order.cpu().numpy(), attack=attack.name,
                      grad_evals=grad_evals)
