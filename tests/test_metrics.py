"""Perturbation metrics against hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from soae_core import metrics


def smooth_images(n: int = 3, channels: int = 1, size: int = 16) -> torch.Tensor:
    """Images in [0.1, 0.9], so a ±0.1 perturbation is never clipped."""
    generator = torch.Generator().manual_seed(0)
    return 0.1 + 0.8 * torch.rand(n, channels, size, size, generator=generator, dtype=torch.float64)


def square_image(size: int = 24) -> torch.Tensor:
    """One dark image with a bright square in the middle: its edges are the square's outline."""
    image = torch.full((1, 1, size, size), 0.2, dtype=torch.float64)
    image[..., 8:16, 8:16] = 0.8
    return image


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_of_constant_perturbation(channels: int) -> None:
    clean = smooth_images(channels=channels)
    adv = clean + 0.01  # MSE = 1e-4 → PSNR = 10·log10(1 / 1e-4) = 40 dB
    np.testing.assert_allclose(metrics.psnr(clean, adv), 40.0, atol=1e-9)
    np.testing.assert_allclose(metrics.psnr_paper_convention(clean, adv), 40.0 + 20 * math.log10(255), atol=1e-9)
    assert metrics.psnr(clean, clean.clone()).tolist() == [math.inf] * 3


def test_paper_convention_floor_bounds_every_linf_perturbation() -> None:
    eps = 8 / 255
    floor = metrics.paper_convention_psnr_floor(eps)
    assert floor == pytest.approx(20 * math.log10(255 ** 2 / 8))
    assert 78.1 < floor < 78.3
    clean = smooth_images(channels=1).clamp(eps, 1 - eps)
    worst = clean + eps  # every pixel moved by the full budget: the floor itself
    np.testing.assert_allclose(metrics.psnr_paper_convention(clean, worst), floor, atol=1e-9)
    noise = (torch.rand(clean.shape, generator=torch.Generator().manual_seed(0), dtype=clean.dtype) * 2 - 1) * eps
    assert (metrics.psnr_paper_convention(clean, clean + noise) >= floor).all()
    with pytest.raises(ValueError, match="eps"):
        metrics.paper_convention_psnr_floor(0.0)
    # the app's help text states the same floor and calls the rest unexplained
    assert f"{floor:.1f} dB" in metrics.PAPER_PSNR_NOTE and "unexplained" in metrics.PAPER_PSNR_NOTE


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim(channels: int) -> None:
    clean = smooth_images(channels=channels)
    np.testing.assert_allclose(metrics.ssim(clean, clean.clone()), 1.0)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1),
                                       dtype=torch.float64)).clamp(0, 1)
    assert np.all(metrics.ssim(clean, noisy) < 0.99)


def test_ssim_rejects_tiny_images() -> None:
    with pytest.raises(ValueError, match="7×7"):
        metrics.ssim(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5))


def test_norms_hand_checked() -> None:
    clean = smooth_images(n=2)
    adv = clean.clone()
    adv[0, 0, :2, :2] += 0.05  # four components of 0.05
    adv[1, 0, 3, 3] -= 0.1
    norms = metrics.perturbation_norms(clean, adv)
    np.testing.assert_allclose(norms["l0"], [4, 1])
    np.testing.assert_allclose(norms["l2"], [0.1, 0.1], atol=1e-12)
    np.testing.assert_allclose(norms["linf"], [0.05, 0.1], atol=1e-12)


@pytest.mark.parametrize("method", ["canny", "sobel"])
def test_edge_alignment_uniform_is_one_and_on_edges_above_one(method: str) -> None:
    clean = square_image()
    edges = metrics.edge_mask(clean, method=method)[0]
    assert 0 < edges.mean() < 0.5
    uniform = clean + 0.02 * torch.where(torch.arange(24) % 2 == 0, 1.0, -1.0).double()  # |δ| = 0.02 everywhere
    np.testing.assert_allclose(metrics.edge_alignment(clean, uniform, method=method), 1.0, atol=1e-12)
    on_edges = clean + 0.02 * torch.from_numpy(edges).double()
    score = metrics.edge_alignment(clean, on_edges, method=method)[0]
    assert score == pytest.approx(1 / edges.mean()) and score > 1
    off_edges = clean + 0.02 * torch.from_numpy(~edges).double()
    assert metrics.edge_alignment(clean, off_edges, method=method)[0] == 0.0
    assert math.isnan(metrics.edge_alignment(clean, clean.clone(), method=method)[0])


def test_canny_edges_outline_the_square() -> None:
    edges = metrics.edge_mask(square_image())[0]
    assert not edges[12, 12] and not edges[2, 2]  # flat inside and outside
    assert edges[7:9, 8:16].any(axis=0).all()  # along the top side


class FlattenIdentity(nn.Module):
    """Features equal the input (layer "identity"), so the distortion is ‖δ‖ / ‖x‖."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.identity = nn.Linear(size, size, bias=False, dtype=torch.float64)
        self.identity.weight.data.copy_(torch.eye(size, dtype=torch.float64))
        self.identity.weight.requires_grad_(False)
        self.mode_switches = 0

    def train(self, mode: bool = True) -> "FlattenIdentity":
        self.mode_switches += 1
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.identity(self.flatten(x))


def test_feature_distortion_hand_checked_and_model_left_alone() -> None:
    clean = smooth_images(n=2, size=8)
    adv = clean.clone()
    adv[0] += 0.05
    model = FlattenIdentity(64).eval()
    switches_before = model.mode_switches
    distortion = metrics.feature_distortion(model, clean, adv)
    assert list(distortion) == ["identity"]
    expected = [float((adv[0] - clean[0]).norm() / clean[0].norm()), 0.0]
    np.testing.assert_allclose(distortion["identity"], expected, rtol=1e-12)
    assert model.mode_switches == switches_before and not model.training
    assert not model._forward_hooks and not model.identity._forward_hooks
    with pytest.raises(ValueError, match="not modules"):
        metrics.feature_distortion(model, clean, adv, layers=["conv9"])


def test_feature_distortion_default_layers_of_a_cnn() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 14 * 14, 3)).double().eval()
    clean = smooth_images(n=2)
    distortion = metrics.feature_distortion(model, clean, (clean + 0.05).clamp(0, 1))
    assert list(distortion) == ["0", "3"]
    assert all(np.all(values > 0) for values in distortion.values())


def test_attributions_of_a_linear_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3, dtype=torch.float64)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images = smooth_images(n=2, size=8)
    target = torch.tensor([0, 2])
    weights = model[1].weight[target].view(2, 1, 8, 8)
    saliency = metrics.attribution(model, images, target, "saliency")
    torch.testing.assert_close(saliency, weights.abs())
    # Integrated gradients of a linear model from a zero baseline are exactly x · w.
    integrated = metrics.attribution(model, images, target, "integrated_gradients", n_steps=4)
    torch.testing.assert_close(integrated, images * weights)
    np.testing.assert_allclose(metrics.attribution_similarity(saliency, saliency), 1.0)
    assert all(p.grad is None for p in model.parameters())


def test_spectrum_and_high_frequency_share() -> None:
    clean = smooth_images(n=2)
    constant = clean + 0.05
    spectrum = metrics.perturbation_spectrum(clean, constant)
    assert spectrum.shape == (2, 16, 16)
    assert spectrum[0, 8, 8] == pytest.approx(0.05 * 256) and spectrum[0].sum() == pytest.approx(0.05 * 256)
    np.testing.assert_allclose(metrics.high_frequency_share(clean, constant), 0.0, atol=1e-12)
    checkerboard = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2 - 1
    np.testing.assert_allclose(metrics.high_frequency_share(clean, clean + 0.05 * checkerboard.double()), 1.0)


@pytest.mark.parametrize("call", [
    lambda: metrics.psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9)),
    lambda: metrics.ssim(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 2.0)),
    lambda: metrics.edge_mask(torch.zeros(1, 1, 8, 8), method="laplace"),
    lambda: metrics.high_frequency_share(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), cutoff=0.7),
    lambda: metrics.attribution(nn.Flatten(), torch.zeros(1, 1, 8, 8), torch.tensor([0]), method="lime"),
])
def test_bad_input_raises_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
