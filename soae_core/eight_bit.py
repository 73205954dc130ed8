"""The 8-bit check: is an adversarial example still adversarial once saved as an 8-bit image?

A PNG stores each pixel as k/255; rounding moves every pixel by up to 0.5/255, which can undo a
borderline attack (a recurring complaint about attack demos). Three pieces:

- :func:`to_8bit`: the rounding a PNG export does (nearest k/255, halves to even, as ``np.rint``).
- :func:`rounding_check`: per image, adversarial before and after that rounding.
- :func:`project_to_8bit`: a rounding-aware final projection onto the 8-bit grid that stays in
  the ε-ball and [0, 1] and keeps the example adversarial where it can (nearest rounding;
  else each pixel rounded the way the loss gradient points; else up to ``max_steps`` signed
  steps of one grey level on the grid). It reports per image whether that worked.

Written by hand: no library we use rounds adversarial examples to a grid with the attack's goal
in mind. Images are float tensors (N, C, H, W) in [0, 1]; success follows
:func:`soae_core.targets.attack_succeeded` (prediction = target when targets are given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from soae_core.metrics import check_pair, predictions
from soae_core.targets import attack_succeeded
from soae_core.validation import check_int, check_positive

LEVELS = 255
# The column every table that reports an adversarial example's success puts beside it: a verdict
# (:func:`verdict_8bit`) for one example, a share (:func:`still_adversarial_share`) for many.
EIGHT_BIT_COLUMN = "Adversarial after 8-bit rounding"
# Float slack in grey levels when deciding which levels lie inside the ε-ball: float32 k/255 is
# off by up to ~2e-5 levels, and ε = 8/255 times 255 is 8.000000000000002.
_LEVEL_SLACK = 1e-4


def to_8bit(images: torch.Tensor) -> torch.Tensor:
    """Images rounded to the nearest of the 256 levels k/255 (what saving a PNG does), same dtype."""
    return torch.clamp(torch.round(images.detach() * LEVELS), 0, LEVELS) / LEVELS


def on_8bit_grid(images: torch.Tensor) -> bool:
    """True when every pixel is (within float rounding) a multiple of 1/255."""
    scaled = images.detach().double() * LEVELS
    return bool(((scaled - scaled.round()).abs() <= _LEVEL_SLACK).all())


@dataclass
class RoundingCheck:
    """Per image (N,): predictions before/after 8-bit rounding (int64) and success before/after (bool)."""

    prediction: np.ndarray
    prediction_8bit: np.ndarray
    adversarial: np.ndarray
    adversarial_8bit: np.ndarray


def rounding_check(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor,
                   targets: torch.Tensor | None = None) -> RoundingCheck:
    """Is each adversarial image (N, C, H, W) in [0, 1] still adversarial after :func:`to_8bit`?

    labels: true classes (N,); targets: target classes (N,) for a targeted attack, else None.
    Two forward passes of ``model``.
    """
    prediction, prediction_8bit = predictions(model, adv), predictions(model, to_8bit(adv))
    labels = torch.as_tensor(labels, device=adv.device)
    return RoundingCheck(prediction=prediction.cpu().numpy(), prediction_8bit=prediction_8bit.cpu().numpy(),
                         adversarial=attack_succeeded(prediction, labels, targets).cpu().numpy(),
                         adversarial_8bit=attack_succeeded(prediction_8bit, labels, targets).cpu().numpy())


def verdict_8bit(adversarial: bool, adversarial_8bit: bool) -> str:
    """A table cell: what 8-bit rounding does to one example."""
    if not adversarial:
        return "not adversarial"
    return "yes" if adversarial_8bit else "no — rounding undoes it"


def still_adversarial_share(adversarial: np.ndarray, adversarial_8bit: np.ndarray,
                            among: np.ndarray | None = None) -> float:
    """Share of examples adversarial both as computed and after 8-bit rounding (the verdict "yes"
    of :func:`verdict_8bit`), over the examples where ``among`` (N,) bool holds (default: all).

    adversarial, adversarial_8bit: (N,) bool, as :class:`RoundingCheck` holds them. NaN when
    ``among`` selects no example.
    """
    kept = np.asarray(adversarial, dtype=bool) & np.asarray(adversarial_8bit, dtype=bool)
    if among is not None:
        kept = kept[np.asarray(among, dtype=bool)]
    return float(kept.mean()) if kept.size else float("nan")


@dataclass
class GridProjection:
    """The result of :func:`project_to_8bit`.

    adv: (N, C, H, W) on the 8-bit grid, within ε of the clean image and in [0, 1].
    adversarial_before: (N,) bool, the float example was adversarial.
    adversarial_nearest: (N,) bool, still adversarial after plain nearest rounding (clamped to the ball).
    adversarial: (N,) bool, the projected example is adversarial.
    method: (N,) how each image ended: "nearest rounding", "directed rounding", "k grid steps",
        "not possible in k grid steps" or "not adversarial before rounding".
    grad_evals: input-gradient evaluations spent per image (the most any image needed).
    """

    adv: torch.Tensor
    adversarial_before: np.ndarray
    adversarial_nearest: np.ndarray
    adversarial: np.ndarray
    method: list[str]
    grad_evals: int

    def message(self, index: int = 0) -> str:
        """One sentence for image ``index``: kept adversarial, or why not."""
        how = self.method[index]
        if self.adversarial[index]:
            return f"On the 8-bit grid and still adversarial ({how})."
        if not self.adversarial_before[index]:
            return "The example was not adversarial before rounding, so there was nothing to keep."
        return (f"Could not keep this example adversarial on the 8-bit grid ({how} within ε); "
                "the 8-bit image is rounded to the nearest levels inside the ε-ball.")


def _margin(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
            targets: torch.Tensor | None) -> torch.Tensor:
    """(N,) > 0 where the attack's goal holds: target logit over the best other (targeted) or the best
    wrong logit over the true one (untargeted)."""
    return _logit_margin(model(images), labels, targets)


def _logit_margin(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """:func:`_margin` from logits (N, classes) already computed."""
    goal = labels if targets is None else targets
    goal_logit = logits.gather(1, goal[:, None])[:, 0]
    others = logits.scatter(1, goal[:, None], -torch.inf).amax(dim=1)
    return others - goal_logit if targets is None else goal_logit - others


def _margin_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     targets: torch.Tensor | None) -> torch.Tensor:
    variable = images.detach().clone().requires_grad_(True)
    return torch.autograd.grad(_margin(model, variable, labels, targets).sum(), variable)[0]


def _grid_box(clean: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest 8-bit level (as k/255, clean's dtype) inside [x − ε, x + ε] ∩ [0, 1] per pixel."""
    x = clean.detach().double()
    low = torch.ceil(torch.clamp(x - eps, min=0.0) * LEVELS - _LEVEL_SLACK)
    high = torch.floor(torch.clamp(x + eps, max=1.0) * LEVELS + _LEVEL_SLACK)
    if bool((low > high).any()):
        raise ValueError(f"no 8-bit image lies within ε = {eps * LEVELS:g}/255 of this image: some pixels are "
                         "further than ε from every level k/255; use ε ≥ 0.5/255 or an 8-bit source image")
    return (low / LEVELS).to(clean.dtype), (high / LEVELS).to(clean.dtype)


def project_to_8bit(model: nn.Module, clean: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor,
                    eps: float, targets: torch.Tensor | None = None, max_steps: int = 10) -> GridProjection:
    """Project adversarial images onto the 8-bit grid, keeping them adversarial where possible.

    Args:
        model: classifier (frozen; only input gradients are taken).
        clean, adv: (N, C, H, W) in [0, 1], adv within ``eps`` (L∞) of clean.
        labels: true classes (N,) int64; targets: target classes (N,) for a targeted attack.
        eps: the attack's L∞ budget in [0, 1] pixel units.
        max_steps: most signed one-level steps on the grid for images that rounding undoes.

    Every returned pixel is a level k/255 inside [x − ε, x + ε] ∩ [0, 1]. Images not adversarial
    before rounding are only rounded. Raises ValueError for bad shapes, or when some pixel has
    no level within ε (ε < 0.5/255 on a non-8-bit image).
    """
    check_pair(clean, adv)
    eps = check_positive("eps", eps, allow_zero=True)
    max_steps = check_int("max_steps", max_steps, minimum=0)
    labels = torch.as_tensor(labels, dtype=torch.long, device=adv.device)
    low, high = _grid_box(clean, eps)
    adv = adv.detach()

    def succeeded(images: torch.Tensor) -> torch.Tensor:
        return attack_succeeded(predictions(model, images), labels, targets)

    def margin_and_success(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The goal's margin (N,) and success (N,) bool of ``images``, from one forward pass."""
        with torch.no_grad():
            logits = model(images)
        return _logit_margin(logits, labels, targets), attack_succeeded(logits.argmax(dim=1), labels, targets)

    def clip(images: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(images, low), high)

    def per_image(mask: torch.Tensor) -> torch.Tensor:
        return mask[:, None, None, None]

    before = succeeded(adv)
    rounded = clip(to_8bit(adv))
    margin, nearest = margin_and_success(rounded)
    done = nearest | ~before
    method = ["nearest rounding" if ok else "not adversarial before rounding" for ok in nearest.tolist()]
    grad_evals = 0
    current = rounded
    if bool((~done).any()):
        # Round each pixel the way the goal's margin rises: up where its gradient is positive.
        grad_evals += 1
        slope = _margin_gradient(model, adv, labels, targets)
        scaled = adv * LEVELS
        directed = torch.where(slope > 0, torch.ceil(scaled), torch.where(slope < 0, torch.floor(scaled),
                                                                         torch.round(scaled)))
        current = torch.where(per_image(done), rounded, clip(directed / LEVELS))
        margin, success = margin_and_success(current)
        newly = ~done & success
        method = ["directed rounding" if hit else m for m, hit in zip(method, newly.tolist(), strict=True)]
        done = done | newly
    # Images still undone: signed one-level steps on the grid, keeping the highest-margin point.
    best, best_margin = current.clone(), margin
    for step in range(1, max_steps + 1):
        if bool(done.all()):
            break
        grad_evals += 1
        slope = _margin_gradient(model, current, labels, targets)
        stepped = torch.round(clip(current + slope.sign() / LEVELS) * LEVELS) / LEVELS
        current = torch.where(per_image(done), current, stepped)
        margin, success = margin_and_success(current)
        newly = ~done & success
        better = ~done & ((margin > best_margin) | newly)
        best = torch.where(per_image(better), current, best)
        best_margin = torch.where(better, margin, best_margin)
        label = f"{step} grid step{'s' if step > 1 else ''}"
        method = [label if hit else m for m, hit in zip(method, newly.tolist(), strict=True)]
        done = done | newly
    adversarial = succeeded(best)
    method = [f"not possible in {max_steps} grid steps" if was and not now else m
              for m, was, now in zip(method, before.tolist(), adversarial.tolist(), strict=True)]
    return GridProjection(adv=best, adversarial_before=before.cpu().numpy(),
                          adversarial_nearest=nearest.cpu().numpy(), adversarial=adversarial.cpu().numpy(),
                          method=method, grad_evals=grad_evals)
