"""AutoAttack (Croce & Hein 2020), L∞, "standard" version: APGD-CE, APGD-T, FAB-T, Square.

Backed by torchattacks (see ``fgsm.py`` for why, and why it is installed with ``--no-deps``):
~10 s for 100 Fashion-MNIST images here, against ~170 s for ART's AutoAttack. torchattacks'
"standard" preset runs APGD-CE, APGD-T (all C−1 targets) and FAB-T at 10 iterations each (the
reference implementation uses 100) and Square with 5000 queries; each later attack only sees
the images the earlier ones did not fool.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from soae_core.attacks.base import Attack, num_classes_of
from soae_core.attacks.counting import BudgetTrace, final_point_trace, run_counted
from soae_core.defaults import PAPER_EPS
from soae_core.validation import check_int


class AutoAttack(Attack):
    """AutoAttack standard, L∞ ball of radius ``eps``; deterministic for a given ``seed``.

    Cost: ``grad_evals`` is the gradient evaluations per image (batch total / N, rounded up;
    FAB's Jacobian rows count one each); the trace's ``forward_images`` also counts Square's
    queries (forward passes without gradient).
    """

    name = "AutoAttack"

    def __init__(self, model: nn.Module, eps: float = PAPER_EPS, seed: int = 0) -> None:
        super().__init__(model, eps)
        self.seed = check_int("seed", seed, minimum=0)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, BudgetTrace]:
        n_classes = num_classes_of(self.model, x)

        def make(counting_model: nn.Module) -> torchattacks.AutoAttack:
            return torchattacks.AutoAttack(counting_model, norm="Linf", eps=self.eps, version="standard",
                                           n_classes=n_classes, seed=self.seed)

        adv, counter = run_counted(make, self.model, x, y, seed=self.seed)
        grad_evals, trace = final_point_trace(self.model, adv, counter)
        return adv, grad_evals, trace
