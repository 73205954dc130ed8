"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size ε.

Backed by torchattacks: it is the maintained PyTorch attack library whose implementations
match the papers, and it is fast here (AutoAttack on 100 Fashion-MNIST images in ~10 s, ART
takes ~170 s, measured on the project machine). torchattacks 3.5.1 is installed with ``--no-deps`` because it pins
``requests~=2.25.1``, which conflicts with streamlit; it only uses requests for downloads.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from soae_core.attacks.base import Attack
from soae_core.attacks.counting import BudgetTrace, final_point_trace, run_counted
from soae_core.defaults import PAPER_EPS


class FGSM(Attack):
    """x_adv = clip_[0,1](x + ε · sign ∇ₓ CE(f(x), y)); one gradient evaluation per image."""

    name = "FGSM"

    def __init__(self, model: nn.Module, eps: float = PAPER_EPS) -> None:
        super().__init__(model, eps)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, BudgetTrace]:
        adv, counter = run_counted(lambda m: torchattacks.FGSM(m, eps=self.eps), self.model, x, y, seed=None)
        grad_evals, trace = final_point_trace(self.model, adv, counter)
        return adv, grad_evals, trace
