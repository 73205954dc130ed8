"""Targeted attacks: which class to reach, which attacks can, and when an attack has succeeded.

The rule in one place (the app's sidebar, the source × target grid, transfer and the 8-bit
check all use it):

- ``untargeted``: any wrong class; success means prediction ≠ true label.
- ``chosen``: one class for every image; it must differ from each image's true class.
- ``least_likely``: per image, the class the model finds least probable on the clean image
  (never the true class).
- ``random``: per image, a class drawn uniformly from the other K − 1 classes by a seeded
  generator (same seed, same images → same targets).

A targeted attack succeeds when prediction = target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from soae_core.attacks import ATTACKS
from soae_core.validation import check_choice, check_int

TARGET_MODES: tuple[str, ...] = ("untargeted", "chosen", "least_likely", "random")
# Labels double as URL values (``?target=least+likely``), so they stay short and plain.
TARGET_MODE_LABELS: dict[str, str] = {"untargeted": "untargeted", "chosen": "chosen class",
                                      "least_likely": "least likely", "random": "random (seeded)"}


@dataclass(frozen=True)
class TargetRule:
    """How targets are chosen. mode: one of :data:`TARGET_MODES`; target: the class index for
    ``chosen`` (ignored otherwise); seed: the generator seed for ``random`` (ignored otherwise)."""

    mode: str = "untargeted"
    target: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("target mode", self.mode, TARGET_MODES)
        if self.mode == "chosen":
            if self.target is None:
                raise ValueError("target mode 'chosen' needs a target class index; got none")
            check_int("target", self.target, minimum=0)
        check_int("seed", self.seed, minimum=0)

    @property
    def targeted(self) -> bool:
        """False for ``untargeted``, True otherwise."""
        return self.mode != "untargeted"


def _class_name(index: int, class_names: tuple[str, ...] | None) -> str:
    return f"'{class_names[index]}' ({index})" if class_names is not None and index < len(class_names) else str(index)


def choose_targets(rule: TargetRule, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   class_names: tuple[str, ...] | None = None) -> torch.Tensor | None:
    """Target classes (N,) int64 for images (N, C, H, W) in [0, 1] with true ``labels`` (N,).

    None for ``untargeted``. ``least_likely`` takes one forward pass of ``model`` on the clean
    images; the other modes take the number of classes from ``class_names`` (the model's class
    names, one per logit), or without them from one forward pass on the first image. Raises
    ValueError when a chosen target is out of range or equals an image's true class (naming
    both), so nothing is attacked towards its own class.
    """
    if not rule.targeted:
        return None
    labels = torch.as_tensor(labels, dtype=torch.long, device=images.device)
    if rule.mode == "least_likely":
        with torch.no_grad():
            masked = model(images).clone()
        masked[torch.arange(labels.numel(), device=labels.device), labels] = torch.inf
        return masked.argmin(dim=1)
    if class_names is not None:
        num_classes = len(class_names)
    else:
        with torch.no_grad():
            num_classes = int(model(images[:1]).shape[1])
    if rule.mode == "chosen":
        if rule.target >= num_classes:
            raise ValueError(f"target class must be in [0, {num_classes - 1}], got {rule.target}")
        clash = (labels == rule.target).nonzero().flatten().tolist()
        if clash:
            which = "the image" if labels.numel() == 1 else f"image(s) {clash}"
            raise ValueError(f"target class {_class_name(rule.target, class_names)} is the true class of {which}; "
                             "a targeted attack needs a different class — choose another target")
        return torch.full_like(labels, rule.target)
    generator = torch.Generator().manual_seed(rule.seed)
    offsets = torch.randint(1, num_classes, (labels.numel(),), generator=generator).to(labels.device)
    return (labels + offsets) % num_classes


def attack_succeeded(predictions: torch.Tensor, labels: torch.Tensor,
                     targets: torch.Tensor | None = None) -> torch.Tensor:
    """Success per image (N,) bool: prediction = target for targeted attacks, else prediction ≠ label."""
    if targets is None:
        return predictions != labels
    return predictions == targets


def targeted_support(attack_name: str) -> str | None:
    """None when attack ``attack_name`` (a key of ``soae_core.attacks.ATTACKS``) has a targeted mode,
    else the one-line reason why it has none."""
    attack = ATTACKS[check_choice("attack", attack_name, tuple(ATTACKS))]
    return None if attack.supports_targeted else attack.untargeted_only_reason


def targeted_attack_names() -> tuple[str, ...]:
    """The attacks that can reach a chosen class, in :data:`soae_core.attacks.ATTACKS` order."""
    return tuple(name for name in ATTACKS if targeted_support(name) is None)

