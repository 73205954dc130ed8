"""What the Krylov Inspector shows: GMRES residual histories of an SOAE run, Ritz values of the
input Hessian, the accuracy of finite-difference Hessian-vector products against the exact ones
as a function of η, and how the Krylov dimension m depends on τ.

All functions take one image (1, C, H, W) in [0, 1] and its true label, and return NumPy arrays
or pandas DataFrames (picklable, so the app can cache them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core.app_settings import AttackSettings
from soae_core.attacks.soae import SOAE
from soae_core.hvp import hvp_central_difference, hvp_exact, hvp_forward_difference, input_gradient
from soae_core.krylov import GMRESResult, gmres
from soae_core.validation import check_images, check_int, check_open_interval, check_positive

DEFAULT_ETAS: tuple[float, ...] = tuple(10.0 ** -k for k in range(1, 11))
DEFAULT_TAUS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8)


@dataclass
class KrylovRecord:
    """GMRES in one outer iteration of SOAE (for the first image of the batch).

    residuals: (m+1,) float64 Givens estimates ‖g − Hδ_j‖/β, starting at 1.0.
    true_residuals: (m+1,) the same computed with the Hessian-vector operator, or None.
    m: Krylov dimension reached; stop_reason: "converged", "breakdown", "max_iter", "beta_zero" or
    "nonfinite"; ritz_values: (m,) complex eigenvalues of the m×m Hessenberg matrix.
    """

    iteration: int
    residuals: np.ndarray
    true_residuals: np.ndarray | None
    m: int
    stop_reason: str
    ritz_values: np.ndarray


def record_from_gmres(result: GMRESResult, iteration: int, sample: int = 0) -> KrylovRecord:
    """A :class:`KrylovRecord` of one sample of a GMRES result."""
    true = result.true_residuals[sample].numpy() if result.true_residuals is not None else None
    return KrylovRecord(iteration=iteration, residuals=result.residuals[sample].numpy(), true_residuals=true,
                        m=int(result.iterations[sample]), stop_reason=result.stop_reason[sample],
                        ritz_values=result.ritz_values(sample).numpy())


def _label_tensor(image: torch.Tensor, label: int) -> torch.Tensor:
    check_images(image, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image must hold exactly one image (1, C, H, W), got shape {tuple(image.shape)}")
    return torch.tensor([check_int("label", label, minimum=0)], dtype=torch.long, device=image.device)


def krylov_history(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings) -> list[KrylovRecord]:
    """Run SOAE with ``settings`` on one image, recording true residuals too; one record per
    outer iteration. (True residuals cost one extra product per Krylov step, so this run's
    gradient count is not the attack's: the Attack Lab runs without them.)"""
    y = _label_tensor(image, label)
    result = SOAE(model, **settings.soae_kwargs(), true_residual=True, keep_images=False)(image, y)
    return [record_from_gmres(it.krylov, index) for index, it in enumerate(result.trace.iterations, start=1)]


@dataclass
class Spectrum:
    """Ritz values of the input Hessian in the Krylov space of the gradient (exact products).

    ritz_values: (m,) real parts (the Hessian is symmetric, so imaginary parts are rounding);
    max_imaginary: the largest |imaginary part| seen; m and stop_reason as in GMRES;
    num_classes: C, for comparing m with the ReLU bound C − 1.
    """

    ritz_values: np.ndarray
    max_imaginary: float
    m: int
    stop_reason: str
    num_classes: int


def hessian_spectrum(model: nn.Module, image: torch.Tensor, label: int, max_dim: int = 60) -> Spectrum:
    """Arnoldi on the exact input Hessian H from the gradient g (GMRES on H d = g, x0 = 0).

    For a ReLU network H = Jᵀ(diag p − ppᵀ)J has rank ≤ C − 1, so the process ends by breakdown
    after at most C − 1 steps and the Ritz values are H's nonzero eigenvalues (all ≥ 0). A smooth
    network adds a full-rank, indefinite term: m runs to ``max_dim``, negative values appear.
    Use a float64 model for a clean breakdown test.
    """
    y = _label_tensor(image, label)
    max_dim = check_int("max_dim", max_dim, minimum=1)
    with torch.no_grad():
        num_classes = int(model(image).shape[1])
    _, grad = input_gradient(model, image, y)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return hvp_exact(model, image, y, v)

    result = gmres(matvec, grad, tau=1e-12, max_iter=max_dim)
    ritz = result.ritz_values(0).numpy()
    return Spectrum(ritz_values=np.sort(ritz.real)[::-1].copy(),
                    max_imaginary=float(np.abs(ritz.imag).max()) if ritz.size else 0.0,
                    m=int(result.iterations[0]), stop_reason=result.stop_reason[0], num_classes=num_classes)


def _relative_error(product: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    return float(torch.linalg.vector_norm(product.double() - reference) / torch.linalg.vector_norm(reference))


def fd_accuracy_sweep(model32: nn.Module, model64: nn.Module, image: torch.Tensor, label: int,
                      etas: tuple[float, ...] = DEFAULT_ETAS) -> pd.DataFrame:
    """Relative error ‖Hv_fd − Hv‖/‖Hv‖ of finite-difference products against the exact one.

    v is the input gradient at the image (the paper's first product, Hg). The reference Hv is
    the exact product in float64; the differences are taken in float32 (``model32``) and
    float64 (``model64``, the same weights), forward and central, for every η in ``etas``.
    Large η: truncation error (curvature changes, ReLU/max-pool kinks are crossed); small η:
    round-off (∇L(x+ηv) − ∇L(x) cancels) — in float32 from η ≈ 1e-3 on, in float64 ≈ 1e-8.

    Returns a DataFrame with columns eta, scheme ("forward"/"central"), dtype, relative_error
    (NaN where the product is not finite or the exact product is zero).
    """
    y = _label_tensor(image, label)
    etas = tuple(check_positive("etas", eta) for eta in etas)
    x64 = image.detach().double()
    _, v = input_gradient(model64, x64, y)
    reference = hvp_exact(model64, x64, y, v)
    rows = []
    for dtype_name, model, dtype in (("float32", model32, torch.float32), ("float64", model64, torch.float64)):
        x, direction = x64.to(dtype), v.to(dtype)
        grad_at_x = input_gradient(model, x, y)[1]
        for eta in etas:
            products = {"forward": hvp_forward_difference(model, x, y, direction, eta, grad_at_x=grad_at_x),
                        "central": hvp_central_difference(model, x, y, direction, eta)}
            for scheme, product in products.items():
                usable = bool(torch.isfinite(product).all()) and float(reference.abs().max()) > 0
                rows.append({"eta": eta, "scheme": scheme, "dtype": dtype_name,
                             "relative_error": _relative_error(product, reference) if usable else np.nan})
    return pd.DataFrame(rows)


def m_for_tau(record: KrylovRecord, tau: float) -> tuple[int, str]:
    """The Krylov dimension and stop reason GMRES would have had with threshold ``tau``.

    The Arnoldi process and its residual estimates do not depend on τ (τ only decides when to
    stop), so a run with a smaller τ contains every larger τ's run as a prefix: m(τ) is the
    first j with estimate < τ, else the run's own end.
    """
    tau = check_open_interval("tau", tau, 0.0, 1.0)
    below = np.nonzero(record.residuals[1:] < tau)[0]
    if below.size and (below[0] + 1 < record.m or record.stop_reason != "breakdown"):
        return int(below[0]) + 1, "converged"
    return record.m, record.stop_reason


def tau_to_m_table(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings,
                   taus: tuple[float, ...] = DEFAULT_TAUS, max_dim: int = 100) -> pd.DataFrame:
    """m(τ) in the first outer iteration of SOAE at the image, for the finite-difference (with
    ``settings.eta``) and the exact product.

    One GMRES run per product with the smallest τ and cap ``max_dim``; see :func:`m_for_tau`.
    Returns a DataFrame indexed by τ with columns "m (finite difference)", "stop (finite
    difference)", "m (exact)", "stop (exact)".
    """
    y = _label_tensor(image, label)
    taus = tuple(sorted((check_open_interval("taus", t, 0.0, 1.0) for t in taus), reverse=True))
    max_dim = check_int("max_dim", max_dim, minimum=1)
    table = pd.DataFrame(index=pd.Index(taus, name="τ"))
    for label_text, mode in (("finite difference", "finite_difference"), ("exact", "exact")):
        run_settings = dataclasses.replace(settings, hvp=mode, tau=min(taus), max_krylov=max_dim)
        attack = SOAE(model, **run_settings.soae_kwargs())
        _, _, _, result, _ = attack.direction(image.detach(), y)
        record = record_from_gmres(result, iteration=1)
        found = [m_for_tau(record, tau) for tau in taus]
        table[f"m ({label_text})"] = [m for m, _ in found]
        table[f"stop ({label_text})"] = [reason for _, reason in found]
    return table


def class_margin_gains(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings,
                       class_names: tuple[str, ...]) -> pd.DataFrame:
    """What SOAE's first step does to every wrong class, along δ̃ (with ``settings``' product) and along g.

    One row per wrong class k (in class order): "class"; "gap" = z_y − z_k at the image (the logit
    margin the attack must close, > 0 while the image is classified correctly); "along g" and
    "along δ̃": the first-order gain Δa_k = (J_k − J_y)·δ of k's advantage for the step
    δ = (α/N)·sign(g) or (α/N)·sign(δ̃), projected; "along g, measured" and "along δ̃, measured":
    the same through the network; "nearest": True for the wrong class with the smallest gap.
    Computed by :func:`soae_core.margins.first_order_margins` (the measurement of
    bench/measure_margins.py). ValueError for a bad image, label or class_names.
    """
    from soae_core.margins import first_order_margins

    y = _label_tensor(image, label)
    if len(class_names) <= label:
        raise ValueError(f"class_names must name every class, got {len(class_names)} for label {label}")
    soae = settings.soae_kwargs()
    change = first_order_margins(model, image.detach(), y, eps=soae["eps"], steps=soae["steps"], alpha=soae["alpha"],
                                 hvp=soae["hvp"], tau=soae["tau"], max_krylov=soae["max_krylov"])
    wrong = [k for k in range(change.advantage.shape[1]) if k != label]
    if len(class_names) != change.advantage.shape[1]:
        raise ValueError(f"class_names must have one name per class ({change.advantage.shape[1]}), "
                         f"got {len(class_names)}")
    nearest = int(change.nearest_wrong[0])
    return pd.DataFrame({
        "class": [class_names[k] for k in wrong],
        "gap": [-float(change.advantage[0, k]) for k in wrong],
        "along g": [float(change.gradient_first_order[0, k]) for k in wrong],
        "along δ̃": [float(change.newton_first_order[0, k]) for k in wrong],
        "along g, measured": [float(change.gradient_actual[0, k]) for k in wrong],
        "along δ̃, measured": [float(change.newton_actual[0, k]) for k in wrong],
        "nearest": [k == nearest for k in wrong],
    })
