"""What one SOAE step along δ̃ and along g does to each wrong class, to first order.

For an image x with true class y and logits z, the *advantage* of a wrong class k is
a_k = z_k − z_y (the image is misclassified as soon as some a_k > 0; −a_k is the usual logit
margin). A step δ changes it, to first order, by Δa_k = (J_k − J_y)·δ with J = ∂z/∂x, the logit
Jacobian: one Jacobian-vector product per direction (``torch.func.jvp``), exact for the
piecewise-linear network within its linear region.

:func:`first_order_margins` compares SOAE's first sign step (α/N)·sign(δ̃), δ̃ ≈ H⁻¹g the
GMRES solution at x, with the same step along the gradient, (α/N)·sign(g) — "SOAE without
curvature". It also records the actual change of the advantages after each step (a forward pass),
so that the first-order picture can be checked against what happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from soae_core.attacks.base import project_linf
from soae_core.attacks.soae import SOAE


@dataclass
class MarginChange:
    """First SOAE step along δ̃ and along g for B images of K classes (all tensors float, on the host).

    advantage: (B, K) a_k = z_k − z_y at x (0 for k = y).
    newton_first_order, gradient_first_order: (B, K) Δa_k = (J_k − J_y)·δ for δ the projected step
        along sign(δ̃) and along sign(g) (0 for k = y).
    newton_actual, gradient_actual: (B, K) a_k(x + δ) − a_k(x), the same steps through the network.
    step: α/N, the L∞ size of each step in [0, 1] pixel units.
    labels: (B,) int64 true classes. correct: (B,) bool, model right at x.
    """

    advantage: torch.Tensor
    newton_first_order: torch.Tensor
    gradient_first_order: torch.Tensor
    newton_actual: torch.Tensor
    gradient_actual: torch.Tensor
    step: float
    labels: torch.Tensor
    correct: torch.Tensor

    def wrong_classes(self, values: torch.Tensor) -> torch.Tensor:
        """(B, K−1) ``values`` (B, K) without each row's true class."""
        keep = torch.ones_like(values, dtype=torch.bool)
        keep[torch.arange(values.shape[0]), self.labels] = False
        return values[keep].view(values.shape[0], -1)

    @property
    def nearest_wrong(self) -> torch.Tensor:
        """(B,) int64 the wrong class with the largest advantage at x (the nearest boundary)."""
        masked = self.advantage.clone()
        masked[torch.arange(masked.shape[0]), self.labels] = -torch.inf
        return masked.argmax(dim=1)


def _advantage(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits - logits.gather(1, labels[:, None])


def first_order_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
                        steps: int = 4, alpha: float | None = None, hvp: str = "exact", tau: float = 1e-3,
                        max_krylov: int = 30) -> MarginChange:
    """Advantage changes of every class for SOAE's first step along δ̃ and along g at x.

    Args:
        model: classifier on [0, 1] images (eval mode, frozen); x: (B, C, H, W) in [0, 1];
        y: (B,) int64 true classes.
        eps, steps, alpha, hvp, tau, max_krylov: SOAE's settings (alpha None: 2.5·eps); the step
            compared is the first one, (α/N)·sign(·), projected to the ε-ball and [0, 1].
    Returns a :class:`MarginChange`. ValueError for bad settings or images (from :class:`SOAE`).
    """
    attack = SOAE(model, eps=eps, steps=steps, alpha=alpha, hvp=hvp, tau=tau, max_krylov=max_krylov,
                  keep_images=False)
    x, y = attack.validate(x, y)
    was_training = model.training
    model.eval()
    try:
        newton, _, gradient, _, _ = attack.direction(x, y)
        size = attack.alpha / attack.steps
        with torch.no_grad():
            logits = model(x)
        advantage = _advantage(logits, y)
        out = {}
        for name, direction in (("newton", newton), ("gradient", gradient)):
            stepped = project_linf(x + size * direction.sign(), x, attack.eps)
            delta = (stepped - x).detach()
            _, jvp = torch.func.jvp(model, (x.detach(),), (delta,))
            with torch.no_grad():
                after = _advantage(model(stepped), y)
            out[name] = (_advantage(jvp, y).detach(), (after - advantage).detach())
    finally:
        model.train(was_training)
    return MarginChange(advantage=advantage.double().cpu(),
                        newton_first_order=out["newton"][0].double().cpu(),
                        gradient_first_order=out["gradient"][0].double().cpu(),
                        newton_actual=out["newton"][1].double().cpu(),
                        gradient_actual=out["gradient"][1].double().cpu(),
                        step=float(size), labels=y.cpu(), correct=(logits.argmax(1) == y).cpu())


def summarise_margins(change: MarginChange) -> list[dict[str, float | str]]:
    """Per direction ("δ̃", "g"), medians over the images the model gets right of what the step does.

    Keys: nearest_gain — Δa of the nearest wrong class (first order); mean_gain — Δa averaged over
    the wrong classes; spread — std ÷ mean of Δa over the wrong classes (0: every class raised
    alike); nearest_is_top — share of images whose largest Δa is the nearest wrong class;
    crossed_first_order / crossed_actual — share of images misclassified after this one step,
    predicted by a + Δa and measured; first_order_corr — correlation of Δa with the actual change
    over all wrong classes and images. ValueError if no image is classified correctly.
    """
    keep = change.correct
    if not bool(keep.any()):
        raise ValueError("no image is classified correctly at x: nothing to summarise")
    nearest = change.nearest_wrong[keep]
    advantage = change.wrong_classes(change.advantage)[keep]
    rows = []
    for label, first, actual in (("δ̃", change.newton_first_order, change.newton_actual),
                                 ("g", change.gradient_first_order, change.gradient_actual)):
        gains = change.wrong_classes(first)[keep]
        measured = change.wrong_classes(actual)[keep]
        near_gain = first[keep].gather(1, nearest[:, None])[:, 0]
        top = first[keep].clone()
        top[torch.arange(top.shape[0]), change.labels[keep]] = -torch.inf
        mean = gains.mean(dim=1)
        rows.append({
            "direction": label,
            "nearest_gain": float(near_gain.median()),
            "mean_gain": float(mean.median()),
            "spread": float((gains.std(dim=1) / mean.abs().clamp_min(1e-12)).median()),
            "nearest_is_top": float((top.argmax(dim=1) == nearest).double().mean()),
            "crossed_first_order": float(((advantage + gains) > 0).any(dim=1).double().mean()),
            "crossed_actual": float(((advantage + measured) > 0).any(dim=1).double().mean()),
            "first_order_corr": float(torch.corrcoef(torch.stack([gains.flatten(), measured.flatten()]))[0, 1]),
        })
    return rows
