"""The 8-bit check: rounding as a PNG does, adversarial before/after rounding, and the
rounding-aware projection (on the grid, inside the ε-ball and [0, 1], adversarial where it can be)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from soae_core.analysis.attack_lab import png_bytes
from soae_core.attacks import PGD
from soae_core.data import load_samples
from soae_core.eight_bit import on_8bit_grid, project_to_8bit, rounding_check, to_8bit, verdict_8bit
from soae_core.models import load_model
from soae_core.targets import TargetRule, choose_targets


class Threshold(nn.Module):
    """Two classes on one-pixel images: logit₁ = min(1000·(x − b), cap) − 0, logit₀ = 0.

    Class 1 wins for x > b. Above b + cap/1000 the logit is flat (zero gradient)."""

    def __init__(self, boundary_255: float, cap: float = 1e9) -> None:
        super().__init__()
        self.boundary, self.cap = boundary_255 / 255, cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.clamp(1000 * (x.flatten(1)[:, :1] - self.boundary), max=self.cap)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def _pixel(level: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), level / 255, dtype=torch.float64)


def test_to_8bit_matches_the_png_export():
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    decoded = [np.asarray(Image.open(io.BytesIO(png_bytes(img.numpy())))) for img in x]
    assert torch.equal(to_8bit(x)[:, 0], torch.as_tensor(np.stack(decoded)).float() / 255)
    assert on_8bit_grid(to_8bit(x)) and not on_8bit_grid(x)


def test_rounding_check_reports_examples_that_rounding_undoes():
    model = Threshold(boundary_255=100.3)
    labels = torch.tensor([0])
    undone = rounding_check(model, _pixel(100.4), labels)       # rounds to 100 < 100.3
    kept = rounding_check(model, _pixel(100.6), labels)         # rounds to 101
    assert undone.adversarial.tolist() == [True] and undone.adversarial_8bit.tolist() == [False]
    assert kept.adversarial_8bit.tolist() == [True] and kept.prediction_8bit.tolist() == [1]
    assert verdict_8bit(True, False).startswith("no") and verdict_8bit(True, True) == "yes"
    assert verdict_8bit(False, False) == "not adversarial"
    targeted = rounding_check(model, _pixel(100.4), labels, targets=torch.tensor([1]))
    assert targeted.adversarial.tolist() == [True] and targeted.adversarial_8bit.tolist() == [False]


def test_directed_rounding_keeps_a_borderline_example():
    model = Threshold(boundary_255=100.3)
    result = project_to_8bit(model, _pixel(99), _pixel(100.4), torch.tensor([0]), eps=2 / 255)
    assert result.adversarial_before.tolist() == [True] and result.adversarial_nearest.tolist() == [False]
    assert result.adversarial.tolist() == [True] and result.method == ["directed rounding"]
    assert result.adv.item() * 255 == pytest.approx(101)
    assert "still adversarial" in result.message()


def test_grid_steps_when_the_gradient_at_the_float_example_is_flat():
    # Above 100.1 + 0.255 the logit is capped: no gradient at 100.49, which rounds down to 100.
    model = Threshold(boundary_255=100.1, cap=1.0)
    result = project_to_8bit(model, _pixel(99), _pixel(100.49), torch.tensor([0]), eps=3 / 255)
    assert result.adversarial.tolist() == [True] and result.method == ["1 grid step"]
    assert result.adv.item() * 255 == pytest.approx(101) and result.grad_evals == 2


def test_says_when_no_8bit_example_within_eps_is_adversarial():
    model = Threshold(boundary_255=100.3)
    # The ball [99.6, 100.4]/255 holds one level, 100/255, the clean image itself.
    result = project_to_8bit(model, _pixel(100), _pixel(100.35), torch.tensor([0]), eps=0.4 / 255, max_steps=3)
    assert result.adversarial_before.tolist() == [True] and result.adversarial.tolist() == [False]
    assert result.method == ["not possible in 3 grid steps"]
    assert result.adv.item() * 255 == pytest.approx(100)
    assert "Could not keep" in result.message()


def test_examples_that_were_not_adversarial_are_only_rounded():
    model = Threshold(boundary_255=200)
    result = project_to_8bit(model, _pixel(100), _pixel(100.4), torch.tensor([0]), eps=1 / 255)
    assert result.method == ["not adversarial before rounding"] and result.grad_evals == 0
    assert result.adv.item() * 255 == pytest.approx(100)
    assert "nothing to keep" in result.message()


def test_no_level_within_a_tiny_eps_of_an_off_grid_image_is_a_clear_error():
    with pytest.raises(ValueError, match="no 8-bit image lies within ε = 0.1/255"):
        project_to_8bit(Threshold(100), _pixel(100.5), _pixel(100.5), torch.tensor([0]), eps=0.1 / 255)
    with pytest.raises(ValueError, match="same shape"):
        project_to_8bit(Threshold(100), _pixel(100), torch.zeros(2, 1, 1, 1, dtype=torch.float64),
                        torch.tensor([0]), eps=1 / 255)


@pytest.mark.parametrize(("eps_255", "targeted"), [(8.0, False), (25.5, False), (25.5, True)])
def test_projection_on_fashion_mnist_stays_on_grid_in_ball_and_keeps_borderline_examples(eps_255, targeted):
    model = load_model("fmnist-cnn-std")
    samples = load_samples("fashion_mnist")
    clean, labels = samples.images[:60], samples.labels[:60]
    eps = eps_255 / 255
    targets = choose_targets(TargetRule("random", seed=1), model, clean, labels) if targeted else None
    attack = PGD(model, eps=eps, steps=10, alpha=eps / 4, targeted=targeted)
    adv = attack(clean, labels if targets is None else targets).adv
    # Shrink each perturbation to just past the decision boundary: the examples rounding undoes.
    low, high = torch.zeros(60), torch.ones(60)
    for _ in range(25):
        mid = (low + high) / 2
        goal = rounding_check(model, clean + mid[:, None, None, None] * (adv - clean), labels, targets).adversarial
        goal = torch.as_tensor(goal)
        high, low = torch.where(goal, mid, high), torch.where(goal, low, mid)
    borderline = clean + high[:, None, None, None] * (adv - clean)
    check = rounding_check(model, borderline, labels, targets)
    result = project_to_8bit(model, clean, borderline, labels, eps, targets=targets)
    assert on_8bit_grid(result.adv) and result.adv.min() >= 0 and result.adv.max() <= 1
    assert (result.adv - clean).abs().max() <= eps + 1e-6
    assert (result.adversarial_before == check.adversarial).all()
    assert check.adversarial.sum() >= 5 and (check.adversarial & ~check.adversarial_8bit).sum() >= 2
    # Every borderline example is kept on the grid (measured: all of them, by directed rounding).
    assert (result.adversarial == check.adversarial).all()
    assert torch.equal(torch.as_tensor(rounding_check(model, result.adv, labels, targets).adversarial),
                       torch.as_tensor(result.adversarial))
