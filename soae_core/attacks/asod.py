"""ASOD, the "adversarial second-order" attack of Li, Chen, Wang & Carin (2018), "Certified
Adversarial Robustness with Additive Noise" / "Second-Order Adversarial Attack and Certifiable
Robustness" (arXiv:1809.03113), as the public TensorFlow code released with it does it.

Written by hand: no maintained library ships it. Despite the name it uses no Hessian: the second
order enters through Gaussian smoothing. Each step averages the input gradient over
``n_samples`` noisy copies x_k + ξ, ξ ~ N(0, σ²I) (the copies are not clipped to [0, 1]: the
expectation is over the smoothed loss), then takes an L∞ sign step of α and projects back to the
ε-ball ∩ [0, 1]. Public settings: σ = 0.7 for MNIST (used here for Fashion-MNIST too),
σ = 100/255 for CIFAR-10, 10 samples, 20 steps, α = ε/10.
"""

from __future__ import annotations

import torch
from torch import nn

from soae_core.attacks.base import Attack, project_linf
from soae_core.attacks.counting import BudgetTrace, predict
from soae_core.defaults import PAPER_EPS
from soae_core.hvp import input_gradient
from soae_core.validation import check_int, check_positive


class ASOD(Attack):
    """ASOD, L∞: ``steps`` sign steps on the noise-averaged gradient.

    sigma: std of the Gaussian noise, in image units ([0, 1] scale).
    n_samples: noisy copies per step; one gradient evaluation each, so the attack costs
        ``steps · n_samples`` gradient evaluations per image.
    alpha: step size (None: ε/10, as the public code).
    seed: seed of the noise (None: the global RNG).
    The trace holds the prediction after every step.
    """

    name = "ASOD"

    def __init__(self, model: nn.Module, eps: float = PAPER_EPS, steps: int = 20, alpha: float | None = None,
                 sigma: float = 0.7, n_samples: int = 10, seed: int | None = None) -> None:
        super().__init__(model, eps)
        self.steps = check_int("steps", steps, minimum=1)
        self.alpha = self.eps / 10 if alpha is None else check_positive("alpha", alpha)
        self.sigma = check_positive("sigma", sigma, allow_zero=True)
        self.n_samples = check_int("n_samples", n_samples, minimum=1)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, BudgetTrace]:
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        adv = x.clone()
        trace = BudgetTrace()
        for step in range(1, self.steps + 1):
            grad = torch.zeros_like(x)
            for _ in range(self.n_samples):
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                grad += input_gradient(self.model, adv + self.sigma * noise, y)[1]
            adv = project_linf(adv + self.alpha * grad.sign(), x, self.eps)
            trace.predictions.append(predict(self.model, adv))
            trace.grad_evals.append(step * self.n_samples)
        trace.gradient_images = self.steps * self.n_samples * x.shape[0]
        trace.forward_images = trace.gradient_images + self.steps * x.shape[0]
        return adv, self.steps * self.n_samples, trace
