"""The Attack Lab's computation: SOAE and the chosen baselines on one image, summarised as plain
NumPy values (picklable, so the app can cache them), plus the exports the page offers.

``run_lab(model, image, label, settings, dataset, class_names)`` runs every attack once and
returns a :class:`LabRun`: the clean prediction, one :class:`AttackOutcome` per attack (SOAE
first) and one :class:`IterationView` per SOAE outer iteration for the iteration scrubber.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from soae_core import __version__
from soae_core.analysis.common import check_single_image, class_probabilities
from soae_core.analysis.settings import AttackSettings
from soae_core.attacks import make_attack
from soae_core.metrics import perturbation_norms, psnr, ssim


@dataclass
class AttackOutcome:
    """One attack's result on the image.

    adv, perturbation: (C, H, W) float32; adv in [0, 1], perturbation = adv − image in [−ε, ε].
    probabilities: (K,) softmax of the model on adv. success: prediction ≠ the true label.
    psnr_db (data_range 1; inf when adv = image), ssim, l2, linf (pixel units [0, 1]).
    grad_evals: input-gradient evaluations; wall_time_s: seconds.
    """

    name: str
    adv: np.ndarray
    perturbation: np.ndarray
    probabilities: np.ndarray
    prediction: int
    success: bool
    psnr_db: float
    ssim: float
    l2: float
    linf: float
    grad_evals: int
    wall_time_s: float


@dataclass
class IterationView:
    """The SOAE iterate after ``index`` outer iterations (index 0: the clean image).

    image: (C, H, W) in [0, 1]; loss: cross-entropy at this iterate; m: Krylov dimension of the
    step that led here (0 for index 0); stop_reason: how GMRES ended ('' for index 0);
    cosine_to_gradient: cos(δ̃, g) of that step (nan for index 0).
    """

    index: int
    image: np.ndarray
    prediction: int
    confidence: float
    loss: float
    m: int
    stop_reason: str
    cosine_to_gradient: float


@dataclass
class LabRun:
    """Everything the Attack Lab page shows for one (model, image, label, settings)."""

    image: np.ndarray
    label: int
    class_names: tuple[str, ...]
    clean_probabilities: np.ndarray
    clean_prediction: int
    outcomes: list[AttackOutcome]
    iterations: list[IterationView]

    def outcome(self, name: str) -> AttackOutcome:
        """The outcome of attack ``name`` (ValueError if it was not run)."""
        for outcome in self.outcomes:
            if outcome.name == name:
                return outcome
        raise ValueError(f"attack {name!r} was not run; ran: {[o.name for o in self.outcomes]}")


def _iteration_views(image: torch.Tensor, trace: Any) -> list[IterationView]:
    views = [IterationView(index=0, image=image[0].float().numpy(), prediction=int(trace.initial_prediction[0]),
                           confidence=float(trace.initial_confidence[0]), loss=float(trace.initial_loss[0]),
                           m=0, stop_reason="", cosine_to_gradient=math.nan)]
    for index, it in enumerate(trace.iterations, start=1):
        views.append(IterationView(index=index, image=it.adv[0].float().numpy(), prediction=int(it.prediction[0]),
                                   confidence=float(it.confidence[0]), loss=float(it.loss_after[0]),
                                   m=int(it.krylov.iterations[0]), stop_reason=it.krylov.stop_reason[0],
                                   cosine_to_gradient=float(it.cosine_to_gradient[0])))
    return views


def run_attack(model: nn.Module, image: torch.Tensor, label: int, name: str,
               attack_kwargs: dict[str, Any]) -> tuple[AttackOutcome, list[IterationView]]:
    """Run attack ``name`` (a name of ``soae_core.attacks.ATTACKS``) on one image.

    Args:
        model: classifier (eval mode, frozen parameters; only input gradients are taken).
        image: (1, C, H, W) in [0, 1], the model's dtype. label: the true class index.
        attack_kwargs: the attack's keyword arguments besides the model
            (see :meth:`AttackSettings.attack_kwargs`).

    Returns (outcome, SOAE iterate views — empty for the baselines). ValueError for bad inputs.
    """
    attack = make_attack(name, model, **attack_kwargs)
    y = check_single_image(model, image, label)
    image = image.detach()
    result = attack(image, y)
    probabilities = torch.as_tensor(class_probabilities(model, result.adv))
    prediction = int(probabilities.argmax())
    norms = perturbation_norms(image, result.adv)
    outcome = AttackOutcome(
        name=name, adv=result.adv[0].float().numpy(), perturbation=(result.adv - image)[0].float().numpy(),
        probabilities=probabilities.numpy(), prediction=prediction, success=prediction != label,
        psnr_db=float(psnr(image, result.adv)[0]),
        ssim=float(ssim(image, result.adv)[0]) if min(image.shape[-2:]) >= 7 else math.nan,
        l2=float(norms["l2"][0]), linf=float(norms["linf"][0]), grad_evals=int(result.grad_evals),
        wall_time_s=float(result.wall_time_s))
    views = _iteration_views(image, result.trace) if name == "SOAE" else []
    return outcome, views


# Runs one attack of a lab run: (name, keyword arguments) -> what :func:`run_attack` returns.
AttackRunner = Callable[[str, dict[str, Any]], tuple[AttackOutcome, list[IterationView]]]


def run_lab(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings, dataset: str,
            class_names: tuple[str, ...], run: AttackRunner | None = None,
            on_attack: Callable[[str], None] | None = None) -> LabRun:
    """Run SOAE and ``settings.baselines`` on one image (1, C, H, W) in [0, 1] with true ``label``.

    dataset: the model's dataset name (sets ASOD's σ); class_names: one name per class.
    run: runs one attack (default :func:`run_attack` on this model and image; the app passes
    its cached equivalent). on_attack: called with each attack's name before it runs.
    Returns a :class:`LabRun`. Raises ValueError for bad inputs or parameters.
    """
    if run is None:
        def run(name: str, kwargs: dict[str, Any]) -> tuple[AttackOutcome, list[IterationView]]:
            return run_attack(model, image, label, name, kwargs)
    outcomes, iterations = [], []
    for name in settings.attack_names:
        if on_attack is not None:
            on_attack(name)
        outcome, views = run(name, settings.attack_kwargs(name, dataset))
        outcomes.append(outcome)
        iterations = iterations or views
    return assemble_run(model, image, label, class_names, outcomes, iterations)


def assemble_run(model: nn.Module, image: torch.Tensor, label: int, class_names: tuple[str, ...],
                 outcomes: list[AttackOutcome], iterations: list[IterationView]) -> LabRun:
    """A :class:`LabRun` from per-attack results (as :func:`run_attack` returns them)."""
    probabilities = class_probabilities(model, image)
    if len(class_names) != probabilities.shape[0]:
        raise ValueError(f"class_names must name all {probabilities.shape[0]} classes, got {len(class_names)}")
    return LabRun(image=image[0].detach().float().numpy(), label=label, class_names=tuple(class_names),
                  clean_probabilities=probabilities, clean_prediction=int(probabilities.argmax()),
                  outcomes=outcomes, iterations=iterations)


def top_k(probabilities: np.ndarray, class_names: tuple[str, ...], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes as (name, probability), most probable first."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]


def metrics_table(run: LabRun) -> pd.DataFrame:
    """One row per attack: prediction, confidence, success, PSNR (dB), SSIM, L2, L∞ (×1/255),
    gradient evaluations and time (ms). Indexed by attack name."""
    rows = []
    for o in run.outcomes:
        rows.append({"Attack": o.name, "Prediction": run.class_names[o.prediction],
                     "Confidence": float(o.probabilities[o.prediction]), "Success": o.success,
                     "PSNR (dB)": o.psnr_db, "SSIM": o.ssim, "L2": o.l2, "L∞ (×1/255)": o.linf * 255,
                     "Gradient evals": o.grad_evals, "Time (ms)": o.wall_time_s * 1000})
    return pd.DataFrame(rows).set_index("Attack")


def png_bytes(image: np.ndarray) -> bytes:
    """(C, H, W) float image in [0, 1] → 8-bit PNG bytes (greyscale for C = 1, RGB for C = 3).

    8-bit rounding moves pixels by up to 0.5/255, which can undo a borderline attack; the
    ``.npy`` export keeps the exact values.
    """
    array = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    pil = Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(np.moveaxis(array, 0, -1))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """A NumPy array as the bytes of a ``.npy`` file (``np.load`` reads it back)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def library_versions() -> dict[str, str]:
    """Versions of soae_core and the libraries that shape the numbers."""
    versions = {"soae_core": __version__}
    for package in ("torch", "torchvision", "torchattacks", "numpy", "scikit-image", "streamlit"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_bundle(run: LabRun, settings: AttackSettings, model_name: str, image_source: str) -> bytes:
    """A JSON document (UTF-8 bytes) that says how to reproduce ``run``: model, image source,
    true label, settings (seed included), per-attack metrics and library versions."""
    document = {
        "model": model_name, "image": image_source, "label": run.label, "label_name": run.class_names[run.label],
        "clean_prediction": run.class_names[run.clean_prediction], "settings": settings.as_dict(),
        "results": [{"attack": o.name, "prediction": run.class_names[o.prediction], "success": o.success,
                     "psnr_db": _finite_or_none(o.psnr_db), "ssim": _finite_or_none(o.ssim), "l2": o.l2,
                     "linf": o.linf, "grad_evals": o.grad_evals, "wall_time_s": o.wall_time_s}
                    for o in run.outcomes],
        "versions": library_versions(),
    }
    return json.dumps(document, indent=2).encode("utf-8")
