"""Counting what a library attack spends on a model, without touching the model.

Library attacks (torchattacks) call the model themselves; to report their cost honestly we hand
them :class:`CountingModel` instead of the model. It counts

- forward images: images passed through the model (for a black-box attack: its queries);
- gradient images: images whose logits received a gradient in a backward pass (one per
  ``autograd.grad``/``backward`` call reaching the logits, so FAB's per-class Jacobian rows
  count one each).

If any parameter of the wrapped model requires grad, it is called with its parameters detached
(``torch.func.functional_call``), so no backward pass can reach them; a frozen model (the app's
shared models) is called directly, which is cheaper (Square makes thousands of calls). No hook
is registered on the model itself (only on each call's own output tensor).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    import torchattacks


class CountingModel(nn.Module):
    """Wraps ``model``: same logits (N, num_classes), plus counters.

    ``record_predictions=True`` keeps the argmax (N,) int64 of every forward pass in
    ``predictions``, in call order: for an attack that evaluates its whole batch once per step
    (PGD), entry k is the prediction at iterate k.
    """

    def __init__(self, model: nn.Module, record_predictions: bool = False) -> None:
        super().__init__()
        self.model = model
        # Copy the mode without recursing: torchattacks restores train() at the end of a call
        # when the model it was given reports training=True.
        self.training = model.training
        self.record_predictions = record_predictions
        self.forward_images = 0
        self.gradient_images = 0
        self.predictions: list[torch.Tensor] = []
        self._detach_parameters = any(p.requires_grad for p in model.parameters())

    def _count_gradient(self, grad: torch.Tensor) -> None:
        self.gradient_images += int(grad.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) of the wrapped model for images x (N, C, H, W) in [0, 1]."""
        if self._detach_parameters:
            params = {name: p.detach() for name, p in self.model.named_parameters()}
            logits = torch.func.functional_call(self.model, params, (x,))
        else:
            logits = self.model(x)
        self.forward_images += int(x.shape[0])
        if self.record_predictions:
            self.predictions.append(logits.detach().argmax(dim=1))
        if logits.requires_grad:
            logits.register_hook(self._count_gradient)
        return logits


@dataclass
class BudgetTrace:
    """Trace of a first-order attack, for accuracy-versus-budget comparisons.

    predictions: list of (N,) int64 predictions, one per recorded point (per step for PGD and
        ASOD, one final entry for FGSM and AutoAttack).
    grad_evals: cumulative input-gradient evaluations per image at each recorded point.
    forward_images, gradient_images: totals over the whole batch (images through the model,
        images whose logits got a gradient); AutoAttack's Square part spends forward passes only.
    """

    predictions: list[torch.Tensor] = field(default_factory=list)
    grad_evals: list[int] = field(default_factory=list)
    forward_images: int = 0
    gradient_images: int = 0


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,) int64 of ``model`` on images x (N, C, H, W), without gradients."""
    with torch.no_grad():
        return model(x).argmax(dim=1)


def per_image(total: int, batch_size: int) -> int:
    """A batch total turned into a per-image count, rounded up (never understates cost)."""
    return math.ceil(total / batch_size)


def final_point_trace(model: nn.Module, adv: torch.Tensor, counter: CountingModel) -> tuple[int, BudgetTrace]:
    """(grad_evals per image, trace) for a one-shot attack: one recorded point, the final images."""
    grad_evals = per_image(counter.gradient_images, adv.shape[0])
    trace = BudgetTrace(predictions=[predict(model, adv)], grad_evals=[grad_evals],
                        forward_images=counter.forward_images, gradient_images=counter.gradient_images)
    return grad_evals, trace


def run_counted(
    make_attack: Callable[[nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int | None,
    record_predictions: bool = False,
) -> tuple[torch.Tensor, CountingModel]:
    """Run a library attack built by ``make_attack(counting_model)`` on (x, y).

    With a ``seed`` the global RNG is forked and seeded, so the run is reproducible and random
    state outside the call is unchanged (the library's own ``manual_seed`` calls included).
    Without one the attack draws from, and advances, the global RNG as usual.
    Returns (adv (N, C, H, W), the counter).
    """
    counter = CountingModel(model, record_predictions=record_predictions)
    if seed is None:
        return make_attack(counter)(x, y).detach(), counter
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        adv = make_attack(counter)(x, y)
    return adv.detach(), counter


def with_target_mode(attack: torchattacks.attack.Attack, targeted: bool) -> torchattacks.attack.Attack:
    """Switch a torchattacks attack to its "targeted by label" mode when ``targeted`` (the labels it is
    called with are then the target classes, and it lowers their loss); returns the attack."""
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    return attack
