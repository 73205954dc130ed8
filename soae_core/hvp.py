"""Gradients and Hessian-vector products of the classification loss with respect to the input.

The loss is the softmax cross-entropy summed over the batch, so the Hessian is block-diagonal
across samples: one batched call yields every sample's own product and samples never mix.
(With BatchNorm in train mode they would; models are always evaluated in eval mode.)

Three products, all on images x (B, C, H, W) and directions v of the same shape:

* :func:`hvp_forward_difference` — the paper's eq. 22, (∇L(x + η v) − ∇L(x)) / η, reusing
  ∇L(x): one gradient evaluation per product.
* :func:`hvp_central_difference` — (∇L(x + η v) − ∇L(x − η v)) / (2η): two evaluations,
  truncation error O(η²) instead of O(η).
* :func:`hvp_exact` — double backpropagation: exact up to rounding, about 2× the cost of one
  gradient on this CPU (measured; forward-over-reverse with torch.func was ~6×).

The finite differences step a distance η along the *unit* direction v/‖v‖ (per sample) and
rescale by ‖v‖, so η is the same length in input space for every product; the paper's
first product steps η·g with the raw gradient g instead (g is rescaled here — a deliberate,
documented deviation that keeps η meaningful). A zero direction gives a zero product.

Only input gradients are taken (torch.autograd.grad / torch.func): model parameters never
accumulate ``.grad``, so one model can be shared between threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

HVP_MODES = ("finite_difference", "central_difference", "exact")


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy per sample: logits (B, K), labels (B,) → (B,)."""
    return F.cross_entropy(logits, y, reduction="none")


def _loss_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool,
              loss_fn: LossFn = cross_entropy_loss) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = model(x)
    per_sample = loss_fn(logits, y)
    # Targeted attacks *decrease* the loss of the target class: we maximise −CE(target).
    objective = -per_sample if targeted else per_sample
    return objective.sum(), objective, logits


@dataclass
class LossGradient:
    """The objective at x, its input gradient and the logits of the same forward pass, detached:
    objective (B,), gradient (B, C, H, W), logits (B, K)."""

    objective: torch.Tensor
    gradient: torch.Tensor
    logits: torch.Tensor


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool = False,
                   loss_fn: LossFn = cross_entropy_loss) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample objective and its input gradient.

    Args:
        model: classifier returning logits (B, K), in eval mode.
        x: images (B, C, H, W) (any real values; the attack keeps them in [0, 1]).
        y: labels (B,) int64 (for targeted attacks: the target classes).
        targeted: if True the objective is −loss(model(x), y), else loss(model(x), y).
        loss_fn: per-sample loss (model output (B, K), y (B,)) → (B,); default cross-entropy.

    Returns:
        (objective (B,), gradient (B, C, H, W)), both detached, same dtype as x.
    """
    found = loss_gradient(model, x, y, targeted, loss_fn)
    return found.objective, found.gradient


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool = False,
                  loss_fn: LossFn = cross_entropy_loss) -> LossGradient:
    """:func:`input_gradient` that also keeps the logits of its forward pass (a caller that needs
    the prediction at x saves a forward pass: SOAE, once per outer iteration)."""
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        total, per_sample, logits = _loss_sum(model, x_var, y, targeted, loss_fn)
        (grad,) = torch.autograd.grad(total, x_var)
    return LossGradient(objective=per_sample.detach(), gradient=grad.detach(), logits=logits.detach())


def _norm_and_safe(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖v‖ per sample, the same clamped away from 0), both (B, 1, …, 1) to broadcast against v.

    Dividing by the smallest normal number instead of 0 keeps a zero direction's step zero.
    """
    norm = torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)
    return norm, norm.clamp_min(torch.finfo(norm.dtype).tiny)


def hvp_forward_difference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
                           eta: float, grad_at_x: torch.Tensor | None = None,
                           targeted: bool = False, loss_fn: LossFn = cross_entropy_loss) -> torch.Tensor:
    """Forward difference H v ≈ ‖v‖ (∇L(x + η v̂) − ∇L(x)) / η with v̂ = v/‖v‖ (paper eq. 22).

    ``grad_at_x`` (B, C, H, W) is reused if given (then one gradient evaluation per call).
    Returns (B, C, H, W). May contain non-finite values if the model overflows; callers check.
    """
    if grad_at_x is None:
        grad_at_x = input_gradient(model, x, y, targeted, loss_fn)[1]
    return _forward_difference(model, x, y, v, eta, eta, grad_at_x, targeted, loss_fn)


def _forward_difference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, eta: float,
                        eta_divisor: float | torch.Tensor, grad_at_x: torch.Tensor, targeted: bool,
                        loss_fn: LossFn) -> torch.Tensor:
    """:func:`hvp_forward_difference` with ∇L(x) given and η also as the divisor ``eta_divisor``:
    η itself, or η as a 0-dim tensor of x's dtype and device (the same quotient, without
    converting a Python number on every call). Six tensor operations besides the gradient: at
    batch 1 every call between two gradients costs several times its tight-loop price
    (``bench/measure_cold_steps.py``), so the shifted point's gradient is taken without
    :func:`input_gradient`'s detached copies.
    """
    norm, safe = _norm_and_safe(v)
    grad_shifted = _gradient_at_new(model, torch.addcdiv(x, v, safe, value=eta), y, targeted, loss_fn)
    return (grad_shifted - grad_at_x) * (norm / eta_divisor)


def _gradient_at_new(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool,
                     loss_fn: LossFn) -> torch.Tensor:
    """Input gradient (B, C, H, W) of the summed objective at x, a tensor the caller has just made
    and keeps no other use of (no autograd history): marked as requiring grad in place."""
    with torch.enable_grad():
        total, _, _ = _loss_sum(model, x.requires_grad_(True), y, targeted, loss_fn)
        (grad,) = torch.autograd.grad(total, x)
    return grad


def hvp_central_difference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
                           eta: float, targeted: bool = False,
                           loss_fn: LossFn = cross_entropy_loss) -> torch.Tensor:
    """Central difference H v ≈ ‖v‖ (∇L(x + η v̂) − ∇L(x − η v̂)) / (2η); two gradient evaluations."""
    norm, safe = _norm_and_safe(v)
    plus = _gradient_at_new(model, torch.addcdiv(x, v, safe, value=eta), y, targeted, loss_fn)
    minus = _gradient_at_new(model, torch.addcdiv(x, v, safe, value=-eta), y, targeted, loss_fn)
    return (plus - minus) * (norm / (2 * eta))


def hvp_exact(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
              targeted: bool = False, loss_fn: LossFn = cross_entropy_loss) -> torch.Tensor:
    """Exact H v by double backpropagation (reverse-over-reverse). Returns (B, C, H, W).

    Measured here against torch.func's forward-over-reverse (jvp of grad) on the small CNN:
    double backward took ~2× one gradient, forward-over-reverse ~6×, so double backward it is.
    """
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        total, _, _ = _loss_sum(model, x_var, y, targeted, loss_fn)
        (grad,) = torch.autograd.grad(total, x_var, create_graph=True)
        (product,) = torch.autograd.grad(grad, x_var, grad_outputs=v.detach(), allow_unused=True)
    if product is None:  # the loss is linear in x (e.g. an all-linear model): H = 0
        return torch.zeros_like(x)
    return product.detach()


def make_hvp_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, eta: float,
                      grad_at_x: torch.Tensor | None = None, targeted: bool = False,
                      loss_fn: LossFn = cross_entropy_loss) -> tuple[Callable[..., torch.Tensor], Callable[[], int]]:
    """A GMRES operator ``matvec(v, index)`` for the Hessian at x, and a counter of evaluations.

    ``index`` (int64, increasing, as GMRES passes it) lists the positions in the batch of the
    samples v holds, so GMRES only pays for the samples still iterating; when it lists all B,
    no sample is gathered. The counter returns the gradient evaluations spent so far
    (forward difference 1 per call, central 2, exact 1 Hessian-vector product per call).
    """
    if mode not in HVP_MODES:
        raise ValueError(f"hvp must be one of {HVP_MODES}, got {mode!r}")
    count = {"evals": 0}
    eta_divisor = torch.full((), eta, dtype=x.dtype, device=x.device)  # η, filled on the device (no copy)
    evals_per_call = {"exact": 1, "central_difference": 2}.get(mode, 1 if grad_at_x is not None else 2)

    def product(xs: torch.Tensor, ys: torch.Tensor, v: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        if mode == "exact":
            return hvp_exact(model, xs, ys, v, targeted, loss_fn)
        if mode == "central_difference":
            return hvp_central_difference(model, xs, ys, v, eta, targeted, loss_fn)
        if base is None:
            return hvp_forward_difference(model, xs, ys, v, eta, None, targeted, loss_fn)
        divisor = eta_divisor if v.dtype == eta_divisor.dtype else eta
        return _forward_difference(model, xs, ys, v, eta, divisor, base, targeted, loss_fn)

    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # Only the gradients inside need autograd (they enable it themselves): the arithmetic
        # around them records nothing, so products are constants to a caller that differentiates.
        count["evals"] += evals_per_call
        with torch.no_grad():
            if index.numel() == x.shape[0]:  # increasing positions, all of them: 0 … B−1, nothing to gather
                return product(x, y, v, grad_at_x)
            return product(x[index], y[index], v, None if grad_at_x is None else grad_at_x[index])

    return matvec, lambda: count["evals"]
