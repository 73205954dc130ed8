"""The Source × target grid page's computation: one image per class, attacked towards every other class.

For a model with K classes it shows K × K images (10 × 10 for Fashion-MNIST): row i starts from
the image of class i, column j is the target class j, the diagonal holds the clean images. Each
cell records whether the model now predicts the target, before and after 8-bit rounding.

:func:`source_target_grid` runs it all; the app caches one row at a time (:func:`grid_row`) to
show progress and reuse rows, then calls :func:`assemble_grid`, as :func:`source_target_grid` does.
Images are float tensors (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core.attacks import make_attack
from soae_core.eight_bit import to_8bit
from soae_core.metrics import predictions
from soae_core.targets import attack_succeeded, targeted_support
from soae_core.validation import check_images, check_int


@dataclass
class GridRow:
    """One source image attacked towards every class: adv (K, C, H, W) float32 in [0, 1] with the clean
    image at its own class; grad_evals: input-gradient evaluations per attacked image."""

    adv: np.ndarray
    grad_evals: int


@dataclass
class TargetGrid:
    """Every source image attacked towards every class: row i = the image of class i, column j = target j.

    images: (K, K, C, H, W) float32 in [0, 1]; the diagonal holds the clean images.
    predictions, predictions_8bit: (K, K) int64, the model's class before/after 8-bit rounding
        (diagonal: the clean prediction).
    success, success_8bit: (K, K) bool, prediction = target (False on the diagonal).
    attack: the attack's name. grad_evals: input-gradient evaluations per attacked image.
    """

    images: np.ndarray
    predictions: np.ndarray
    predictions_8bit: np.ndarray
    success: np.ndarray
    success_8bit: np.ndarray
    attack: str
    grad_evals: int

    @property
    def pairs(self) -> int:
        """K·(K − 1), the off-diagonal (source, target) pairs."""
        k = self.success.shape[0]
        return k * (k - 1)

    def table(self, class_names: tuple[str, ...]) -> pd.DataFrame:
        """Rows source class, columns target class: "✓" target reached, "✓ (lost at 8 bits)", "✗", "original"."""
        k = self.success.shape[0]
        cells = [["original" if i == j else ("✓" if self.success_8bit[i, j] else "✓ (lost at 8 bits)")
                  if self.success[i, j] else "✗" for j in range(k)] for i in range(k)]
        return pd.DataFrame(cells, index=pd.Index(class_names[:k], name="source \\ target"), columns=class_names[:k])


def one_image_per_class(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Index of the first image of each class 0 … K−1 in ``labels`` (ValueError naming missing classes)."""
    labels = torch.as_tensor(labels).tolist()
    missing = [c for c in range(num_classes) if c not in labels]
    if missing:
        raise ValueError(f"the images hold no example of class(es) {missing}; the grid needs one image per class")
    return [labels.index(c) for c in range(num_classes)]


def check_grid_attack(name: str) -> None:
    """ValueError (with the reason) unless attack ``name`` can aim at a target."""
    reason = targeted_support(name)
    if reason is not None:
        raise ValueError(f"the grid needs a targeted attack; {name} has none: {reason}")


def grid_row(model: nn.Module, image: torch.Tensor, source_class: int, attack_name: str,
             attack_kwargs: dict[str, Any]) -> GridRow:
    """Attack one image (1, C, H, W) of class ``source_class`` towards each of the model's other classes
    (one batched call of attack ``attack_name`` with ``attack_kwargs`` and ``targeted=True``)."""
    check_images(image, "image")
    check_grid_attack(attack_name)
    with torch.no_grad():
        k = int(model(image).shape[1])
    source_class = check_int("source_class", source_class, minimum=0)
    if image.shape[0] != 1 or source_class >= k:
        raise ValueError(f"grid_row needs one image (1, C, H, W) and a class in [0, {k - 1}]; got shape "
                         f"{tuple(image.shape)} and class {source_class}")
    attack = make_attack(attack_name, model, **{**attack_kwargs, "targeted": True})
    others = torch.tensor([j for j in range(k) if j != source_class], device=image.device)
    result = attack(image.detach().expand(k - 1, -1, -1, -1).contiguous(), others)
    row = image.detach().repeat(k, 1, 1, 1)
    row[others] = result.adv
    return GridRow(adv=row.float().cpu().numpy(), grad_evals=int(result.grad_evals))


def assemble_grid(model: nn.Module, rows: list[GridRow], attack_name: str) -> TargetGrid:
    """The :class:`TargetGrid` of K rows (row i from the image of class i, as :func:`grid_row` returns them)."""
    k = len(rows)
    cells = torch.from_numpy(np.stack([row.adv for row in rows]))
    param = next(model.parameters(), None)
    flat = cells.flatten(0, 1).to(param.dtype if param is not None else torch.float32)
    classes, classes_8bit = predictions(model, flat).view(k, k), predictions(model, to_8bit(flat)).view(k, k)
    sources, targets = torch.arange(k)[:, None].expand(k, k), torch.arange(k).expand(k, k)
    off_diagonal = ~torch.eye(k, dtype=torch.bool)
    success = attack_succeeded(classes.cpu(), sources, targets) & off_diagonal
    success_8bit = attack_succeeded(classes_8bit.cpu(), sources, targets) & off_diagonal
    return TargetGrid(images=cells.numpy(), predictions=classes.cpu().numpy(),
                      predictions_8bit=classes_8bit.cpu().numpy(), success=success.numpy(),
                      success_8bit=success_8bit.numpy(), attack=attack_name,
                      grad_evals=max(row.grad_evals for row in rows))


def source_target_grid(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack_name: str,
                       attack_kwargs: dict[str, Any], progress: Callable[[int, int], None] | None = None,
                       row: Callable[[int, torch.Tensor], GridRow] | None = None) -> TargetGrid:
    """Attack each of K source images (K, C, H, W) in [0, 1] towards each of the other K − 1 classes.

    labels: (K,) the true classes, one image of each of the model's K classes in any order; the
    grid's rows and columns both follow class order, so its diagonal holds the clean images.
    attack_name / attack_kwargs: the attack (one with a targeted mode) and its settings.
    progress(done_rows, K) after each row. row(class, image) computes one row (default
    :func:`grid_row`; the app passes its cached equivalent).
    """
    check_images(images, "images")
    check_grid_attack(attack_name)
    labels = torch.as_tensor(labels, dtype=torch.long, device=images.device)
    with torch.no_grad():
        num_classes = int(model(images[:1]).shape[1])
    if sorted(labels.tolist()) != list(range(num_classes)):
        raise ValueError(f"the grid needs exactly one image of each of the model's {num_classes} classes; "
                         f"got labels {labels.tolist()}")
    if row is None:
        def row(source_class: int, image: torch.Tensor) -> GridRow:
            return grid_row(model, image, source_class, attack_name, attack_kwargs)
    by_class = images.detach()[labels.argsort()]
    rows = []
    for i in range(num_classes):
        rows.append(row(i, by_class[i:i + 1]))
        if progress is not None:
            progress(i + 1, num_classes)
    return assemble_grid(model, rows, attack_name)
