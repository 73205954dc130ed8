"""What the "How SOAE works" page computes: one second-order step on a 2-D toy classifier, then
the loss of the real model around the sidebar's image along the directions SOAE compares.

**The toy.**

Points live in the unit square [0, 1]² (like pixels in [0, 1]); three classes sit in three
Gaussian blobs. A small MLP (tanh: smooth, curved loss; or ReLU: piecewise-linear logits) is
trained on them in well under a second with a fixed seed. At any point p with label y the
module gives what the "How SOAE works" page draws:

* the loss L(p) = CE(f(p), y) on a grid (contours) and the decision regions;
* the gradient g = ∇L(p) and the exact 2×2 Hessian H (``torch.autograd.functional.hessian``);
* the quadratic model Q(δ) = L(p) + gᵀδ + ½ δᵀHδ on the same grid;
* the second-order direction δ̃ = H⁻¹g (pseudo-inverse when H is singular);
* the GMRES iterates δ_0 = g, δ_1, δ_2 of ``soae_core.krylov.gmres`` (started at g like SOAE;
  in 2-D GMRES ends after at most two steps);
* candidate steps — the gradient sign step, SOAE's sign step and the paper's raw step, each
  projected onto the L∞ box of radius ε around p (and onto [0, 1]²) — with their true loss and
  the loss Q predicts.

Everything is float64 and returned as NumPy arrays (picklable, so the app can cache them).

**The real model.** For an image x (1, C, H, W) in [0, 1] with true label y, g = ∇L(x) and δ̃ ≈ H⁻¹g
the direction SOAE computes at x (``SOAE.direction``, with the attack's own settings):

* :func:`loss_along_line` — L(x + t·u) for a unit direction u and offsets t, beside the
  quadratic model Q(t) = L(x) + t·gᵀu + ½ t²·uᵀHu;
* :func:`loss_on_plane` — L(x + a·u₁ + b·u₂) on the plane spanned by g and δ̃ (u₁ = g/‖g‖,
  u₂ the unit part of δ̃ orthogonal to g), beside Q(a, b) = L + a·gᵀu₁ + b·gᵀu₂ + ½ [a b] M [a b]ᵀ
  with M = Uᵀ H U (2×2);
* :func:`loss_landscape` — both lines and the plane at once, as the page shows them.

Offsets t, a, b are Euclidean lengths in [0, 1] pixel units. Points are *not* clipped to
[0, 1]: a line is a line, so the loss can be compared with its quadratic model; the attack
itself projects. The Hessian enters only through exact Hessian-vector products
(``soae_core.hvp.hvp_exact``). Results are NumPy arrays (picklable, for the app's caches).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from soae_core.analysis.common import check_single_image
from soae_core.attacks.base import project_linf
from soae_core.attacks.soae import SOAE
from soae_core.hvp import cross_entropy_loss, hvp_exact, input_gradient
from soae_core.krylov import gmres
from soae_core.validation import check_choice, check_int, check_open_interval, check_positive

TOY_CLASSES = ("class 0", "class 1", "class 2")
TOY_CENTRES = ((0.25, 0.3), (0.75, 0.3), (0.5, 0.75))
TOY_SPREAD = 0.13
ACTIVATIONS = ("tanh", "relu")
# Label smoothing keeps the logits moderate: losses stay below ~6 on the square (without it the
# MLP grows logit gaps of 20+ and the contours crowd into thin bands).
LABEL_SMOOTHING = 0.1


def make_toy_data(per_class: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (3·per_class, 2) float64 in [0, 1]² around :data:`TOY_CENTRES` and labels (3·per_class,) int64."""
    per_class = check_int("per_class", per_class)
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor(TOY_CENTRES, dtype=torch.float64)
    labels = torch.arange(len(TOY_CENTRES)).repeat_interleave(per_class)
    noise = torch.randn(labels.shape[0], 2, generator=generator, dtype=torch.float64) * TOY_SPREAD
    return (centres[labels] + noise).clamp(0.0, 1.0), labels


@dataclass
class ToyClassifier:
    """A trained toy MLP (float64, eval mode, frozen) with its training accuracy and time (s)."""

    model: nn.Module
    activation: str
    train_accuracy: float
    train_seconds: float


def train_toy_classifier(activation: str = "tanh", hidden: int = 16, steps: int = 150, seed: int = 0) -> ToyClassifier:
    """Train a 2 → hidden → hidden → 3 MLP on :func:`make_toy_data` (full-batch Adam, label
    smoothing, fixed seed); about 0.15 s on one idle CPU core."""
    check_choice("activation", activation, ACTIVATIONS)
    hidden, steps = check_int("hidden", hidden), check_int("steps", steps)
    started = time.perf_counter()
    points, labels = make_toy_data(seed=seed)
    torch.manual_seed(seed)
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    model = nn.Sequential(nn.Linear(2, hidden), act(), nn.Linear(hidden, hidden), act(),
                          nn.Linear(hidden, len(TOY_CLASSES))).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(points), labels, label_smoothing=LABEL_SMOOTHING).backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = float((model(points).argmax(1) == labels).double().mean())
    return ToyClassifier(model, activation, accuracy, time.perf_counter() - started)


@functools.lru_cache(maxsize=len(ACTIVATIONS))
def toy_classifier(activation: str = "tanh") -> ToyClassifier:
    """The trained toy classifier for ``activation`` (trained once per process, then shared)."""
    return train_toy_classifier(activation)


def _point_tensor(point: object) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(point, dtype=np.float64))
    if p.shape != (2,) or not bool(torch.isfinite(p).all()) or float(p.min()) < 0 or float(p.max()) > 1:
        raise ValueError(f"point must be 2 finite coordinates in [0, 1], got {np.asarray(point).tolist()}")
    return p


def _label(label: object) -> int:
    label = check_int("label", label, minimum=0)
    if label >= len(TOY_CLASSES):
        raise ValueError(f"label must be a toy class index in [0, {len(TOY_CLASSES) - 1}], got {label}")
    return label


def toy_loss(model: nn.Module, points: torch.Tensor, label: int) -> torch.Tensor:
    """Cross-entropy of class ``label`` at each point: points (P, 2) → (P,)."""
    targets = torch.full((points.shape[0],), label, dtype=torch.long)
    return F.cross_entropy(model(points), targets, reduction="none")


@dataclass
class LossGrid:
    """The loss of one class on a regular grid of the unit square.

    xs, ys: (R,) coordinates; loss: (R, R) with loss[i, j] at (xs[j], ys[i]);
    prediction: (R, R) int64 predicted class (the decision regions).
    """

    xs: np.ndarray
    ys: np.ndarray
    loss: np.ndarray
    prediction: np.ndarray


def _grid(resolution: int) -> tuple[np.ndarray, torch.Tensor]:
    axis = np.linspace(0.0, 1.0, check_int("resolution", resolution, minimum=2))
    xx, yy = np.meshgrid(axis, axis)
    return axis, torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1))


def loss_grid(model: nn.Module, label: int, resolution: int = 81) -> LossGrid:
    """Loss of class ``label`` and the predicted class on a resolution × resolution grid of [0, 1]²."""
    label = _label(label)
    axis, points = _grid(resolution)
    with torch.no_grad():
        loss = toy_loss(model, points, label).reshape(len(axis), len(axis))
        prediction = model(points).argmax(1).reshape(len(axis), len(axis))
    return LossGrid(axis, axis.copy(), loss.numpy(), prediction.numpy())


@dataclass
class CandidateStep:
    """A step from p: where it lands (2,) inside the box, the true loss there and Q's prediction."""

    name: str
    point: np.ndarray
    loss: float
    quadratic: float


@dataclass
class ToyStep:
    """The second-order picture at one point.

    point (2,), label, probabilities (3,), loss L(p); gradient g (2,); hessian H (2, 2);
    eigenvalues (2,) ascending; direction δ̃ = H⁻¹g (2,) (pseudo-inverse if H is singular);
    gmres_iterates (k+1, 2): δ_0 = g, δ_1, … as GMRES returns them with max_iter = 1, 2;
    gmres_residuals (k+1,) relative residuals ‖g − Hδ_j‖/‖g − Hg‖; gmres_stop_reason;
    eps: L∞ radius of the box; candidates: the projected steps.
    """

    point: np.ndarray
    label: int
    probabilities: np.ndarray
    loss: float
    gradient: np.ndarray
    hessian: np.ndarray
    eigenvalues: np.ndarray
    direction: np.ndarray
    gmres_iterates: np.ndarray
    gmres_residuals: np.ndarray
    gmres_stop_reason: str
    eps: float
    candidates: list[CandidateStep]

    @property
    def ascent(self) -> float:
        """gᵀδ̃: positive when δ̃ = H⁻¹g raises the loss to first order."""
        return float(self.gradient @ self.direction)

    @property
    def curvature(self) -> str:
        """The kind of H: "positive definite", "indefinite" or "negative definite"."""
        if self.eigenvalues.min() > 0:
            return "positive definite"
        return "indefinite" if self.eigenvalues.max() > 0 else "negative definite"

    def quadratic(self, delta: np.ndarray) -> np.ndarray:
        """Q(δ) = L(p) + gᵀδ + ½ δᵀHδ for δ of shape (..., 2); returns (...)."""
        delta = np.asarray(delta, dtype=np.float64)
        return self.loss + delta @ self.gradient + 0.5 * np.einsum("...i,ij,...j->...", delta, self.hessian, delta)

    def quadratic_grid(self, grid: LossGrid) -> np.ndarray:
        """Q(q − p) at every grid point q, shaped like ``grid.loss``."""
        xx, yy = np.meshgrid(grid.xs, grid.ys)
        return self.quadratic(np.stack([xx - self.point[0], yy - self.point[1]], axis=-1))


def _gmres_iterates(hessian: torch.Tensor, gradient: torch.Tensor, tau: float) -> tuple[np.ndarray, np.ndarray, str]:
    """GMRES on H δ = g from δ_0 = g, as SOAE runs it; the iterate after j = 1, 2 steps is the
    solution GMRES returns with max_iter = j (it stops early at convergence or breakdown)."""
    def matvec(v: torch.Tensor) -> torch.Tensor:
        return v @ hessian.T

    b = gradient[None]
    iterates, final = [gradient.numpy()], None
    for steps in (1, 2):
        final = gmres(matvec, b, x0=b, tau=tau, max_iter=steps)
        iterates.append(final.solution[0].numpy())
        if int(final.iterations[0]) < steps:
            iterates.pop()
            break
    return np.stack(iterates), final.residuals[0].numpy(), final.stop_reason[0]


def second_order_step(model: nn.Module, point: object, label: int, eps: float = 0.1, tau: float = 1e-6) -> ToyStep:
    """Everything one SOAE step sees at ``point`` (2 coordinates in [0, 1]) for class ``label``.

    eps: L∞ radius of the box the steps are projected onto (point units, > 0).
    tau: GMRES tolerance in (0, 1). Raises ValueError for bad arguments.
    """
    p, label = _point_tensor(point), _label(label)
    eps, tau = check_positive("eps", eps), check_open_interval("tau", tau, 0.0, 1.0)

    def loss_at(q: torch.Tensor) -> torch.Tensor:
        return toy_loss(model, q[None], label)[0]

    with torch.enable_grad():
        q = p.clone().requires_grad_(True)
        loss = loss_at(q)
        (gradient,) = torch.autograd.grad(loss, q)
    hessian = torch.autograd.functional.hessian(loss_at, p)
    direction = torch.linalg.pinv(hessian) @ gradient
    iterates, residuals, stop_reason = _gmres_iterates(hessian, gradient, tau)
    with torch.no_grad():
        probabilities = torch.softmax(model(p[None]), dim=1)[0]

    step = ToyStep(point=p.numpy(), label=label, probabilities=probabilities.numpy(), loss=float(loss.detach()),
                   gradient=gradient.numpy(), hessian=hessian.numpy(),
                   eigenvalues=torch.linalg.eigvalsh(hessian).numpy(), direction=direction.numpy(),
                   gmres_iterates=iterates, gmres_residuals=residuals, gmres_stop_reason=stop_reason,
                   eps=eps, candidates=[])
    proposals = {"gradient sign step: p + ε·sign(g)": p + eps * gradient.sign(),
                 "SOAE sign step: p + ε·sign(H⁻¹g)": p + eps * direction.sign(),
                 "paper's raw step: p + H⁻¹g, projected": p + direction,
                 "stationary point of Q: p − H⁻¹g, projected": p - direction}
    for name, target in proposals.items():
        landed = project_linf(target, p, eps)
        with torch.no_grad():
            true_loss = float(loss_at(landed))
        step.candidates.append(CandidateStep(name, landed.numpy(), true_loss,
                                             float(step.quadratic((landed - p).numpy()))))
    return step


# ---------------------------------------------------------------------------------- the real model
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
    y = check_single_image(model, image, label)
    found = SOAE(model, **soae_kwargs).direction(image.detach(), y)
    cosine = torch.nn.functional.cosine_similarity(found.direction.flatten(1).double(),
                                                   found.gradient.flatten(1).double(), dim=1, eps=1e-30)
    return Directions(float(found.loss[0]), found.gradient, found.direction, float(cosine[0]))


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
    y = check_single_image(model, image, label)
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
    y = check_single_image(model, image, label)
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


# Half-widths of the offsets the page offers, in units of ε·√(C·H·W).
LANDSCAPE_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class Landscape:
    """The loss around one image: along g, along SOAE's δ̃ and on their plane (each with its
    quadratic model); radius: the half-width of the offsets, corner: ε·√(C·H·W); target: the
    class whose loss it is for a targeted attack (None: the true class's, untargeted)."""

    along_gradient: LossLine
    along_soae: LossLine
    plane: LossPlane
    radius: float
    corner: float
    target: int | None = None


def landscape_points(pixels: int) -> tuple[int, int]:
    """Offsets per line and per plane axis for an image of ``pixels`` values: fewer for large
    (ImageNet-size) images, where every point is a forward pass of a large network."""
    return (41, 9) if pixels > 4096 else (61, 31)


def loss_landscape(model: nn.Module, image: torch.Tensor, label: int, soae_kwargs: dict[str, Any],
                   scale: float = 1.0, target: int | None = None) -> Landscape:
    """:func:`loss_along_line` along g and along δ̃ (SOAE with ``soae_kwargs``, which holds ``eps``)
    and :func:`loss_on_plane` on their plane, over offsets of ``scale`` · ε·√(C·H·W).

    target: the class of a targeted attack: then every loss, g and δ̃ are those of the target's
    cross-entropy (the loss targeted SOAE lowers, stepping along −δ̃); ``label`` is the true class.
    ValueError when target equals label.
    """
    check_single_image(model, image, label)
    if target is not None and target == label:
        raise ValueError(f"target class {target} is the true class of the image; choose another target")
    goal = label if target is None else target
    corner = default_radius(image, soae_kwargs["eps"])
    radius = check_positive("scale", scale) * corner
    line_points, plane_points = landscape_points(image[0].numel())
    directions = soae_directions(model, image, goal, soae_kwargs)
    return Landscape(along_gradient=loss_along_line(model, image, goal, directions.gradient, radius, line_points),
                     along_soae=loss_along_line(model, image, goal, directions.soae_direction, radius, line_points),
                     plane=loss_on_plane(model, image, goal, directions, radius, plane_points),
                     radius=radius, corner=corner, target=target)
