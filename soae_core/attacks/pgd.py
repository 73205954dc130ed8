"""PGD (Madry et al. 2018), L∞: repeated signed-gradient steps projected to the ε-ball.

Backed by torchattacks (see ``fgsm.py`` for why, and why it is installed with ``--no-deps``).
Defaults follow the paper: 20 steps of 2/255, no random start.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from soae_core.attacks.base import Attack
from soae_core.attacks.counting import BudgetTrace, per_image, predict, run_counted
from soae_core.defaults import PAPER_EPS
from soae_core.validation import check_int, check_positive


class PGD(Attack):
    """x_{k+1} = Π_{ε-ball ∩ [0,1]}(x_k + α · sign ∇ₓ CE(f(x_k), y)), k = 0 … steps−1.

    One gradient evaluation per image per step. ``random_start`` starts from a uniform point
    in the ε-ball, drawn from ``seed`` (None: the current global RNG state). The trace holds
    the prediction after every step.
    """

    name = "PGD"

    def __init__(self, model: nn.Module, eps: float = PAPER_EPS, steps: int = 20, alpha: float = 2 / 255,
                 random_start: bool = False, seed: int | None = None) -> None:
        super().__init__(model, eps)
        self.steps = check_int("steps", steps, minimum=1)
        self.alpha = check_positive("alpha", alpha)
        if not isinstance(random_start, bool):
            raise ValueError(f"random_start must be True or False, got {random_start!r}")
        self.random_start = random_start
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, BudgetTrace]:
        def make(counting_model: nn.Module) -> torchattacks.PGD:
            return torchattacks.PGD(counting_model, eps=self.eps, alpha=self.alpha, steps=self.steps,
                                    random_start=self.random_start)

        adv, counter = run_counted(make, self.model, x, y, seed=self.seed, record_predictions=True)
        # torchattacks' PGD evaluates the whole batch once per step, at iterates 0 … steps−1;
        # the prediction after step k is therefore forward k+1, and after the last step ours.
        if len(counter.predictions) != self.steps:
            raise RuntimeError(f"expected torchattacks PGD to make {self.steps} forward passes, "
                               f"it made {len(counter.predictions)}; the per-step trace would be wrong")
        after_step = counter.predictions[1:] + [predict(self.model, adv)]
        trace = BudgetTrace(predictions=after_step, grad_evals=list(range(1, self.steps + 1)),
                            forward_images=counter.forward_images, gradient_images=counter.gradient_images)
        return adv, per_image(counter.gradient_images, x.shape[0]), trace
