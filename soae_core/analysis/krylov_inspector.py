"""What the Krylov Inspector shows: GMRES residual histories of an SOAE run, Ritz values of the
input Hessian, the accuracy of finite-difference Hessian-vector products against the exact ones
as a function of η, how the Krylov dimension m depends on τ, and where SOAE's step goes: how a
step along δ̃ and along g changes every wrong class's logit advantage (first order, and measured).

All functions take one image (1, C, H, W) in [0, 1] and its true label, and return NumPy arrays
or pandas DataFrames (picklable, so the app can cache them). Given a ``target`` class (a targeted
attack), they work on the loss SOAE then uses, the cross-entropy of the target: g, H and the
Krylov space are that loss's, and the targeted step goes along −δ̃ (it lowers the loss).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core.analysis.common import check_single_image
from soae_core.analysis.settings import AttackSettings
from soae_core.attacks.base import project_linf
from soae_core.attacks.soae import SOAE
from soae_core.defaults import FD_ACCURACY_ETAS, TAU_CHOICES
from soae_core.hvp import hvp_central_difference, hvp_exact, hvp_forward_difference, input_gradient
from soae_core.krylov import GMRESResult, gmres
from soae_core.models import ModelInfo
from soae_core.validation import check_int, check_open_interval, check_positive


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


def _goal(model: nn.Module, image: torch.Tensor, label: int, target: int | None) -> torch.Tensor:
    """The class whose loss SOAE works on, (1,) int64: ``target`` when given (it must differ from the
    true ``label``), else ``label``. ValueError for a bad image, label or target."""
    y = check_single_image(model, image, label)
    if target is None:
        return y
    if target == label:
        raise ValueError(f"target class {target} is the true class of the image; choose another target")
    return check_single_image(model, image, target)


def krylov_history(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings,
                   target: int | None = None) -> list[KrylovRecord]:
    """Run SOAE with ``settings`` on one image (aimed at ``target`` when given), recording true
    residuals too; one record per outer iteration. (True residuals cost one extra product per
    Krylov step, so this run's gradient count is not the attack's: the Attack Lab runs without them.)"""
    goal = _goal(model, image, label, target)
    result = SOAE(model, **settings.soae_kwargs(), targeted=target is not None, true_residual=True,
                  keep_images=False)(image, goal)
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


def hessian_spectrum(model: nn.Module, image: torch.Tensor, label: int, max_dim: int = 60,
                     target: int | None = None) -> Spectrum:
    """Arnoldi on the exact input Hessian H from the gradient g (GMRES on H d = g, x0 = 0), of the
    loss of ``label`` — or of ``target`` when given (the targeted attack's loss).

    For a ReLU network H = Jᵀ(diag p − ppᵀ)J has rank ≤ C − 1, so the process ends by breakdown
    after at most C − 1 steps and the Ritz values are H's nonzero eigenvalues (all ≥ 0). A smooth
    network adds a full-rank, indefinite term: m runs to ``max_dim``, negative values appear.
    Use a float64 model for a clean breakdown test.
    """
    y = _goal(model, image, label, target)
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
                      etas: tuple[float, ...] = FD_ACCURACY_ETAS, target: int | None = None) -> pd.DataFrame:
    """Relative error ‖Hv_fd − Hv‖/‖Hv‖ of finite-difference products against the exact one.

    v is the input gradient at the image (the paper's first product, Hg), of the loss of ``label``
    or, when given, of ``target``. The reference Hv is
    the exact product in float64; the differences are taken in float32 (``model32``) and
    float64 (``model64``, the same weights), forward and central, for every η in ``etas``.
    Large η: truncation error (curvature changes, ReLU/max-pool kinks are crossed); small η:
    round-off (∇L(x+ηv) − ∇L(x) cancels) — in float32 from η ≈ 1e-3 on, in float64 ≈ 1e-8.

    Returns a DataFrame with columns eta, scheme ("forward"/"central"), dtype, relative_error
    (NaN where the product is not finite or the exact product is zero).
    """
    y = _goal(model64, image.double(), label, target)
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
                   taus: tuple[float, ...] = TAU_CHOICES, max_dim: int = 100,
                   target: int | None = None) -> pd.DataFrame:
    """m(τ) in the first outer iteration of SOAE at the image (aimed at ``target`` when given), for
    the finite-difference (with ``settings.eta``) and the exact product.

    One GMRES run per product with the smallest τ and cap ``max_dim``; see :func:`m_for_tau`.
    Returns a DataFrame indexed by τ with columns "m (finite difference)", "stop (finite
    difference)", "m (exact)", "stop (exact)".
    """
    y = _goal(model, image, label, target)
    taus = tuple(sorted((check_open_interval("taus", t, 0.0, 1.0) for t in taus), reverse=True))
    max_dim = check_int("max_dim", max_dim, minimum=1)
    table = pd.DataFrame(index=pd.Index(taus, name="τ"))
    for label_text, mode in (("finite difference", "finite_difference"), ("exact", "exact")):
        run_settings = dataclasses.replace(settings, hvp=mode, tau=min(taus), max_krylov=max_dim)
        attack = SOAE(model, **run_settings.soae_kwargs())
        record = record_from_gmres(attack.direction(image.detach(), y).krylov, iteration=1)
        found = [m_for_tau(record, tau) for tau in taus]
        table[f"m ({label_text})"] = [m for m, _ in found]
        table[f"stop ({label_text})"] = [reason for _, reason in found]
    return table


def error_at(table: pd.DataFrame, eta: float, scheme: str = "forward", dtype: str = "float32") -> float | None:
    """The relative error :func:`fd_accuracy_sweep` found for one (η, scheme, dtype); None if η
    is not in the table. Default: the product SOAE's finite-difference mode computes."""
    rows = table[(table["scheme"] == scheme) & (table["dtype"] == dtype) & (table["eta"] == eta)]
    return float(rows["relative_error"].iloc[0]) if len(rows) else None


def best_error(table: pd.DataFrame, dtype: str = "float64") -> float:
    """The smallest relative error over every η and scheme of ``dtype`` in a :func:`fd_accuracy_sweep` table."""
    return float(table[table["dtype"] == dtype]["relative_error"].min())


# Above this relative error (at the best η, in float64) no finite difference is accurate here.
INACCURATE_FD_ERROR = 0.1


def comparison_models(info: ModelInfo, infos: list[ModelInfo]) -> list[ModelInfo]:
    """The available models of ``info``'s dataset other than ``info`` whose spectrum is worth
    setting beside its own: models of the other kind (smooth vs ReLU) first."""
    twins = [m for m in infos if m.available and m.dataset == info.dataset and m.name != info.name]
    return sorted(twins, key=lambda m: ("smooth" in m.architecture) == ("smooth" in info.architecture))


def class_margin_gains(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings,
                       class_names: tuple[str, ...], target: int | None = None) -> pd.DataFrame:
    """What SOAE's first step does to every wrong class, along δ̃ (with ``settings``' product) and along g.

    One row per wrong class k (in class order): "class"; "gap" = z_y − z_k at the image (the logit
    margin the attack must close, > 0 while the image is classified correctly); "along g" and
    "along δ̃": the first-order gain Δa_k = (J_k − J_y)·δ of k's advantage for the step
    δ = (α/N)·sign(g) or (α/N)·sign(δ̃), projected; "along g, measured" and "along δ̃, measured":
    the same through the network; "nearest": True for the wrong class with the smallest gap;
    "target": True for ``target`` (when given, the step is the targeted one, −(α/N)·sign(·) of the
    target's loss gradient and its δ̃). Computed by :func:`first_order_margins` (the measurement of bench/measure_margins.py).
    ValueError for a bad image, label or class_names.
    """
    y = check_single_image(model, image, label)
    goal = None if target is None else _goal(model, image, label, target)
    soae = settings.soae_kwargs()
    change = first_order_margins(model, image.detach(), y, eps=soae["eps"], steps=soae["steps"], alpha=soae["alpha"],
                                 hvp=soae["hvp"], tau=soae["tau"], max_krylov=soae["max_krylov"], targets=goal)
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
        "target": [k == target for k in wrong],
    })


def describe_margin_gains(gains: pd.DataFrame) -> str:
    """One Markdown sentence on a :func:`class_margin_gains` table: the nearest wrong class's gap and
    what each step closes of it, and the mean and spread (std) of the gains over the wrong classes."""
    nearest = gains[gains["nearest"]].iloc[0]
    if "target" in gains and gains["target"].any():
        aim = gains[gains["target"]].iloc[0]
        return (f"The target class, **{aim['class']}**, is {aim['gap']:.2f} logits away. One targeted SOAE step "
                f"along −δ̃ closes {aim['along δ̃']:.2f} of that, the same step along −g {aim['along g']:.2f}. The "
                f"nearest wrong class is **{nearest['class']}** ({nearest['gap']:.2f} logits away). Over the "
                f"{len(gains)} wrong classes δ̃ gains {gains['along δ̃'].mean():.2f} on average, g "
                f"{gains['along g'].mean():.2f}.")
    return (f"The nearest wrong class, **{nearest['class']}**, is {nearest['gap']:.2f} logits away. One SOAE step "
            f"along δ̃ closes {nearest['along δ̃']:.2f} of that, the same step along the plain gradient g "
            f"{nearest['along g']:.2f}. Over the {len(gains)} wrong classes δ̃ gains {gains['along δ̃'].mean():.2f} "
            f"on average (spread {gains['along δ̃'].std():.2f}), g {gains['along g'].mean():.2f} "
            f"(spread {gains['along g'].std():.2f}).")


# ---------------------------------------------------------------- where the step goes: δ̃ against g
@dataclass
class MarginChange:
    """First SOAE step along δ̃ and along g for B images of K classes (all tensors float, on the host).

    advantage: (B, K) a_k = z_k − z_y at x (0 for k = y).
    newton_first_order, gradient_first_order: (B, K) Δa_k = (J_k − J_y)·δ for δ the projected step
        along sign(δ̃) and along sign(g) (0 for k = y).
    newton_actual, gradient_actual: (B, K) a_k(x + δ) − a_k(x), the same steps through the network.
    step: α/N, the L∞ size of each step in [0, 1] pixel units.
    labels: (B,) int64 true classes. correct: (B,) bool, model right at x.
    """

    advantage: torch.Tensor
    newton_first_order: torch.Tensor
    gradient_first_order: torch.Tensor
    newton_actual: torch.Tensor
    gradient_actual: torch.Tensor
    step: float
    labels: torch.Tensor
    correct: torch.Tensor

    def wrong_classes(self, values: torch.Tensor) -> torch.Tensor:
        """(B, K−1) ``values`` (B, K) without each row's true class."""
        keep = torch.ones_like(values, dtype=torch.bool)
        keep[torch.arange(values.shape[0]), self.labels] = False
        return values[keep].view(values.shape[0], -1)

    @property
    def nearest_wrong(self) -> torch.Tensor:
        """(B,) int64 the wrong class with the largest advantage at x (the nearest boundary)."""
        masked = self.advantage.clone()
        masked[torch.arange(masked.shape[0]), self.labels] = -torch.inf
        return masked.argmax(dim=1)


def _advantage(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits - logits.gather(1, labels[:, None])


def first_order_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
                        steps: int = 4, alpha: float | None = None, hvp: str = "exact", tau: float = 1e-3,
                        max_krylov: int = 30, targets: torch.Tensor | None = None) -> MarginChange:
    """Advantage changes of every class for SOAE's first step along δ̃ and along g at x.

    Args:
        model: classifier on [0, 1] images (eval mode, frozen); x: (B, C, H, W) in [0, 1];
        y: (B,) int64 true classes.
        eps, steps, alpha, hvp, tau, max_krylov: SOAE's settings (alpha None: 2.5·eps); the step
            compared is the first one, (α/N)·sign(·), projected to the ε-ball and [0, 1].
        targets: (B,) int64 target classes of a targeted attack: δ̃ and g are then those of the
            targets' loss and the step goes along −sign(·), as targeted SOAE steps (None: untargeted).
    Returns a :class:`MarginChange`. ValueError for bad settings or images (from :class:`SOAE`).
    """
    attack = SOAE(model, eps=eps, steps=steps, alpha=alpha, hvp=hvp, tau=tau, max_krylov=max_krylov,
                  keep_images=False, targeted=targets is not None)
    x, y = attack.validate(x, y)
    goal = y if targets is None else attack.validate(x, targets)[1]
    was_training = model.training
    model.eval()
    try:
        found = attack.direction(x, goal)
        newton, gradient = found.direction, found.gradient
        size = -attack.alpha / attack.steps if attack.targeted else attack.alpha / attack.steps
        with torch.no_grad():
            logits = model(x)
        advantage = _advantage(logits, y)
        out = {}
        for name, direction in (("newton", newton), ("gradient", gradient)):
            stepped = project_linf(x + size * direction.sign(), x, attack.eps)
            delta = (stepped - x).detach()
            _, jvp = torch.func.jvp(model, (x.detach(),), (delta,))
            with torch.no_grad():
                after = _advantage(model(stepped), y)
            out[name] = (_advantage(jvp, y).detach(), (after - advantage).detach())
    finally:
        model.train(was_training)
    return MarginChange(advantage=advantage.double().cpu(),
                        newton_first_order=out["newton"][0].double().cpu(),
                        gradient_first_order=out["gradient"][0].double().cpu(),
                        newton_actual=out["newton"][1].double().cpu(),
                        gradient_actual=out["gradient"][1].double().cpu(),
                        step=abs(float(size)), labels=y.cpu(), correct=(logits.argmax(1) == y).cpu())


def summarise_margins(change: MarginChange) -> list[dict[str, float | str]]:
    """Per direction ("δ̃", "g"), medians over the images the model gets right of what the step does.

    Keys: nearest_gain — Δa of the nearest wrong class (first order); mean_gain — Δa averaged over
    the wrong classes; spread — std ÷ mean of Δa over the wrong classes (0: every class raised
    alike); nearest_is_top — share of images whose largest Δa is the nearest wrong class;
    crossed_first_order / crossed_actual — share of images misclassified after this one step,
    predicted by a + Δa and measured; first_order_corr — correlation of Δa with the actual change
    over all wrong classes and images. ValueError if no image is classified correctly.
    """
    keep = change.correct
    if not bool(keep.any()):
        raise ValueError("no image is classified correctly at x: nothing to summarise")
    nearest = change.nearest_wrong[keep]
    advantage = change.wrong_classes(change.advantage)[keep]
    rows = []
    for label, first, actual in (("δ̃", change.newton_first_order, change.newton_actual),
                                 ("g", change.gradient_first_order, change.gradient_actual)):
        gains = change.wrong_classes(first)[keep]
        measured = change.wrong_classes(actual)[keep]
        near_gain = first[keep].gather(1, nearest[:, None])[:, 0]
        top = first[keep].clone()
        top[torch.arange(top.shape[0]), change.labels[keep]] = -torch.inf
        mean = gains.mean(dim=1)
        rows.append({
            "direction": label,
            "nearest_gain": float(near_gain.median()),
            "mean_gain": float(mean.median()),
            "spread": float((gains.std(dim=1) / mean.abs().clamp_min(1e-12)).median()),
            "nearest_is_top": float((top.argmax(dim=1) == nearest).double().mean()),
            "crossed_first_order": float(((advantage + gains) > 0).any(dim=1).double().mean()),
            "crossed_actual": float(((advantage + measured) > 0).any(dim=1).double().mean()),
            "first_order_corr": float(torch.corrcoef(torch.stack([gains.flatten(), measured.flatten()]))[0, 1]),
        })
    return rows
