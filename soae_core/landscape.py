"""The loss of a real model around one image, along and across the directions SOAE compares.

For an image x (1, C, H, W) in [0, 1] with true label y, g = ∇L(x) and δ̃ ≈ H⁻¹g the direction
SOAE computes at x (``SOAE.direction``, with the attack's own settings). The functions return

* :func:`loss_along_line` — L(x + t·u) for a unit direction u and offsets t, beside the
  quadratic model Q(t) = L(x) + t·gᵀu + ½ t²·uᵀHu;
* :func:`loss_on_plane` — L(x + a·u₁ + b·u₂) on the plane spanned by g and δ̃ (u₁ = g/‖g‖,
  u₂ the unit part of δ̃ orthogonal to g), beside Q(a, b) = L + a·gᵀu₁ + b·gᵀu₂ + ½ [a b] M [a b]ᵀ
  with M = Uᵀ H U (2×2).

Offsets t, a, b are Euclidean lengths in [0, 1] pixel units. Points are *not* clipped to
[0, 1]: a line is a line, so the loss can be compared with its quadratic model; the attack
itself projects. The Hessian enters only through exact Hessian-vector products
(``soae_core.hvp.hvp_exact``). Results are NumPy arrays (picklable, for the app's caches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from soae_core.attacks.soae import SOAE
from soae_core.hvp import cross_entropy_loss, hvp_exact, input_gradient
from soae_core.validation import check_images, check_int, check_positive

def _single(image: torch.Tensor, label: int) -> torch.Tensor:
    check_images(image, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image must hold exactly one image (1, C, H, W), got shape {tuple(image.shape)}")
    return torch.tensor([check_int("label", label, minimum=0)], dtype=torch.long, device=image.device)


def default_radius(image: torch.Tensor, eps: float) -> float:
    """Euclidean length of a corner of the L∞ ε-ball around the image: ε·√(C·H·W), where the
    sign steps of FGSM/PGD/SOAE land."""
    return check_positive("eps", eps) * math.sqrt(image[0].numel())


@dataclass
class Directions:
    """g and δ̃ at the image, each (1, C, H, W), with L(x) and cos(g, δ̃)."""

    loss: float
    gradient: torch.Tensor
    soae_direction: torch.Tensor
    cosine: float


def soae_directions(model: nn.Module, image: torch.Tensor, label: int, soae_kwargs: dict[str, Any]) -> Directions:
    """The gradient and the SOAE direction at the image, with the attack's settings ``soae_kwargs``
    (keyword arguments of :class:`SOAE` besides the model; step settings are irrelevant here)."""
    y = _single(image, label)
    direction, loss, gradient, _, _ = SOAE(model, **soae_kwargs).direction(image.detach(), y)
    cosine = torch.nn.functional.cosine_similarity(direction.flatten(1).double(), gradient.flatten(1).double(),
                                                   dim=1, eps=1e-30)
    return Directions(float(loss[0]), gradient, direction, float(cosine[0]))


def _losses(model: nn.Module, points: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Cross-entropy of label y at each of the points (P, C, H, W), float64 (P,)."""
    values = []
    with torch.no_grad():
        for start in range(0, points.shape[0], batch_size):
            chunk = points[start:start + batch_size]
            values.append(cross_entropy_loss(model(chunk), y.expand(chunk.shape[0])).double())
    return torch.cat(values).cpu().numpy()


def _unit(v: torch.Tensor, name: str) -> torch.Tensor:
    norm = torch.linalg.vector_norm(v)
    if not bool(torch.isfinite(norm)) or float(norm) == 0:
        raise ValueError(f"{name} must be a non-zero, finite direction")
    return v / norm


@dataclass
class LossLine:
    """L(x + t·u) and Q(t) at offsets t (T,), float64; slope = gᵀu, curvature = uᵀHu."""

    offsets: np.ndarray
    loss: np.ndarray
    quadratic: np.ndarray
    loss_at_image: float
    slope: float
    curvature: float


def loss_along_line(model: nn.Module, image: torch.Tensor, label: int, direction: torch.Tensor,
                    radius: float, points: int = 41) -> LossLine:
    """The loss along the unit vector of ``direction`` (1, C, H, W) at ``points`` offsets in
    [−radius, radius] (Euclidean, pixel units), with the quadratic model from the exact Hessian."""
    y = _single(image, label)
    radius, points = check_positive("radius", radius), check_int("points", points, minimum=3)
    if direction.shape != image.shape:
        raise ValueError(f"direction must have the image's shape {tuple(image.shape)}, got {tuple(direction.shape)}")
    u = _unit(direction.to(image.dtype), "direction")
    loss0, gradient = input_gradient(model, image, y)
    slope = float((gradient * u).sum())
    curvature = float((hvp_exact(model, image, y, u) * u).sum())
    offsets = torch.linspace(-radius, radius, points, dtype=image.dtype, device=image.device)
    loss = _losses(model, image + offsets.view(-1, 1, 1, 1) * u, y)
    t = offsets.double().cpu().numpy()
    return LossLine(t, loss, float(loss0[0]) + slope * t + 0.5 * curvature * t ** 2, float(loss0[0]), slope, curvature)


@dataclass
class LossPlane:
    """L and Q on the plane x + a·u₁ + b·u₂: a (A,), b (B,), loss and quadratic (B, A) float64.

    u₁ = g/‖g‖; u₂ = the unit part of δ̃ orthogonal to g. gradient_coords (2,) = (gᵀu₁, gᵀu₂);
    hessian_2d (2, 2) = UᵀHU; soae_coords (2,) = δ̃/‖δ̃‖ in the (u₁, u₂) basis; cosine = cos(g, δ̃).
    note: '' or why u₂ is not from δ̃ (δ̃ parallel to g: a seeded random direction is used).
    """

    a: np.ndarray
    b: np.ndarray
    loss: np.ndarray
    quadratic: np.ndarray
    loss_at_image: float
    gradient_coords: np.ndarray
    hessian_2d: np.ndarray
    soae_coords: np.ndarray
    cosine: float
    note: str = ""


def plane_basis(gradient: torch.Tensor, soae_direction: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Orthonormal u₁ = g/‖g‖ and u₂ ⟂ u₁ in span{g, δ̃}; a seeded random u₂ if δ̃ ∥ g (then a note)."""
    u1 = _unit(gradient, "gradient")
    rest = soae_direction - (soae_direction * u1).sum() * u1
    note = ""
    if float(torch.linalg.vector_norm(rest)) <= 1e-6 * float(torch.linalg.vector_norm(soae_direction)):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(gradient.shape, generator=generator, dtype=gradient.dtype).to(gradient.device)
        rest = noise - (noise * u1).sum() * u1
        note = "H⁻¹g is parallel to g here; the second axis is a random direction orthogonal to g"
    return u1, _unit(rest, "soae_direction"), note


def loss_on_plane(model: nn.Module, image: torch.Tensor, label: int, directions: Directions, radius: float,
                  points: int = 25) -> LossPlane:
    """The loss on the plane spanned by g and δ̃ through the image, on a points × points grid of
    [−radius, radius]², with the quadratic model from the exact Hessian."""
    y = _single(image, label)
    radius, points = check_positive("radius", radius), check_int("points", points, minimum=3)
    u1, u2, note = plane_basis(directions.gradient.to(image.dtype), directions.soae_direction.to(image.dtype))
    loss0, gradient = input_gradient(model, image, y)
    basis = torch.cat([u1, u2])  # (2, C, H, W)
    products = hvp_exact(model, image.expand(2, *image.shape[1:]), y.expand(2), basis)
    hessian_2d = (products.flatten(1).double() @ basis.flatten(1).double().T).cpu().numpy()
    hessian_2d = 0.5 * (hessian_2d + hessian_2d.T)  # symmetric up to rounding
    gradient_coords = (basis.flatten(1).double() @ gradient.flatten().double()).cpu().numpy()
    axis = torch.linspace(-radius, radius, points, dtype=image.dtype, device=image.device)
    bb, aa = torch.meshgrid(axis, axis, indexing="ij")
    grid_points = image + aa.reshape(-1, 1, 1, 1) * u1 + bb.reshape(-1, 1, 1, 1) * u2
    loss = _losses(model, grid_points, y).reshape(points, points)
    a_np, b_np = aa.double().cpu().numpy(), bb.double().cpu().numpy()
    coords = np.stack([a_np, b_np], axis=-1)
    quadratic = (float(loss0[0]) + coords @ gradient_coords
                 + 0.5 * np.einsum("...i,ij,...j->...", coords, hessian_2d, coords))
    soae = directions.soae_direction.to(image.dtype)
    soae_coords = (basis.flatten(1).double() @ _unit(soae, "soae_direction").flatten().double()).cpu().numpy()
    return LossPlane(a=axis.double().cpu().numpy(), b=axis.double().cpu().numpy(), loss=loss, quadratic=quadratic,
                     loss_at_image=float(loss0[0]), gradient_coords=gradient_coords, hessian_2d=hessian_2d,
                     soae_coords=soae_coords, cosine=directions.cosine, note=note)
