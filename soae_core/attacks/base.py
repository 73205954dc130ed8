"""The one call shape every attack shares: ``attack(images, labels) -> AttackResult``.

Modelled on torchattacks: the model is switched to eval mode for the call and restored after,
inputs are validated, the input tensor is never modified, and the result carries the
adversarial images, the gradient evaluations spent and the wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from soae_core.defaults import PAPER_EPS
from soae_core.validation import check_images, check_labels, check_positive


@dataclass
class AttackResult:
    """What every attack returns.

    adv: adversarial images, same shape/dtype/device as the input, in [0, 1] and inside the
        L∞ ε-ball around the input.
    grad_evals: input-gradient evaluations spent (model forward+backward passes; for
        AutoAttack's Square part, queries are counted as forward passes in ``extra``).
    wall_time_s: seconds the attack took.
    trace: attack-specific record (SOAE: a :class:`soae_core.attacks.soae.SOAETrace`).
    extra: anything else worth reporting (dict of plain values).
    """

    adv: torch.Tensor
    grad_evals: int
    wall_time_s: float
    name: str = ""
    trace: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def num_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """Number of logits the model returns for a batch (one forward pass on the first image)."""
    with torch.no_grad():
        return int(model(x[:1]).shape[-1])


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L∞ ball of radius eps around x, then onto the box [0, 1]."""
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


class Attack:
    """Base class: validates, switches the model to eval, times, and wraps the result.

    Subclasses implement ``_run(x, y) -> (adv, grad_evals, trace)`` on a detached copy of the
    input. ``x``: float tensor (N, C, H, W) in [0, 1]; ``y``: int64 labels (N,).
    """

    name = "attack"

    def __init__(self, model: nn.Module, eps: float = PAPER_EPS) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.eps = check_positive("eps", eps, allow_zero=True)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, Any]:
        raise NotImplementedError

    def validate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Check images and labels against the model; returns (x, y) with y as int64."""
        check_images(x)
        param = next(self.model.parameters(), None)
        if param is not None and param.dtype != x.dtype:
            raise ValueError(f"x has dtype {x.dtype} but the model's parameters are {param.dtype}; "
                             "use the same dtype for both (float32 or float64)")
        if param is not None and param.device != x.device:
            raise ValueError(f"x is on {x.device} but the model is on {param.device}; move both to one device")
        y = check_labels(y, x.shape[0], num_classes_of(self.model, x))
        return x, y.to(x.device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        x, y = self.validate(x, y)
        was_training = self.model.training
        self.model.eval()
        start = time.perf_counter()
        try:
            adv, grad_evals, trace = self._run(x.detach().clone(), y)
        finally:
            if was_training:
                self.model.train()
        adv = project_linf(adv.detach(), x.detach(), self.eps)
        return AttackResult(adv=adv, grad_evals=int(grad_evals), wall_time_s=time.perf_counter() - start,
                            name=self.name, trace=trace)
