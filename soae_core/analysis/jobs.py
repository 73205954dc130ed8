"""Attacks on many images, cut into small units so an interactive app can show progress, stop
between units and cache each one: what the Compare & Sweeps page and the Models page's Table I
both run (their tables are in :mod:`soae_core.analysis.compare_sweeps` and
:mod:`soae_core.analysis.models`).

A :class:`Job` is one attack configuration (a row of a table or a point of a sweep). Running a
job on one batch of images gives a :class:`BatchOutcome` of per-image NumPy arrays;
:func:`combine` joins a job's batches into a :class:`JobResult`. Budget curves (accuracy after
each recorded step versus gradient evaluations) come from :func:`soae_core.attacks.budget_points`,
the same reading of the attack traces the evaluation CLI uses, so app and CLI count alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from soae_core import metrics
from soae_core.attacks import ATTACKS, Attack, budget_points, make_attack
from soae_core.attacks.soae import SOAETrace
from soae_core.eight_bit import to_8bit
from soae_core.validation import check_choice, check_images, check_int


@dataclass(frozen=True)
class Job:
    """One attack configuration. label: its row name; attack: a name of ``ATTACKS``;
    kwargs: sorted (name, value) pairs of the attack's keyword arguments besides the model."""

    label: str
    attack: str
    kwargs: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, label: str, attack: str, kwargs: dict[str, Any]) -> "Job":
        """A job from a keyword dict (ValueError for an unknown attack name)."""
        check_choice("attack", attack, tuple(ATTACKS))
        if attack == "SOAE":
            kwargs = {**kwargs, "keep_images": False}  # the trace keeps predictions, not images
        return cls(label, attack, tuple(sorted(kwargs.items())))

    def make(self, model: nn.Module) -> Attack:
        """The attack on ``model``."""
        return make_attack(self.attack, model, **dict(self.kwargs))


def image_order(labels: torch.Tensor) -> np.ndarray:
    """Indices that take the images class by class in turn (first of each class, then the
    second, …), so the first n images of any n are balanced over classes. (N,) int64."""
    labels_np = labels.cpu().numpy()
    rank = np.zeros(len(labels_np), dtype=np.int64)
    for c in np.unique(labels_np):
        members = np.flatnonzero(labels_np == c)
        rank[members] = np.arange(len(members))
    return np.lexsort((labels_np, rank)).astype(np.int64)


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) positions cutting n images into batches of at most batch_size."""
    n, batch_size = check_int("n", n), check_int("batch_size", batch_size)
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


@dataclass
class BatchOutcome:
    """One job on b images (positions are indices into the image set).

    clean_prediction, prediction: (b,) int64 before and after the attack; labels: (b,).
    budget_grad_evals: (K,) cumulative gradient evaluations per image after each recorded step;
    budget_predictions: (K, b) predictions at those steps. grad_evals_per_image: the attack's count.
    psnr_db, ssim, linf: (b,) per image (inf / 1 / 0 where the image is unchanged).
    krylov_m: (b,) mean Krylov dimension over SOAE's iterations; krylov_capped: (b,) share of
    those GMRES solves that stopped at the cap (both NaN for other attacks).
    prediction_8bit: (b,) predictions on the adversarial images rounded to 8 bits (as saved PNGs).
    """

    positions: np.ndarray
    labels: np.ndarray
    clean_prediction: np.ndarray
    prediction: np.ndarray
    budget_grad_evals: np.ndarray
    budget_predictions: np.ndarray
    grad_evals_per_image: float
    psnr_db: np.ndarray
    ssim: np.ndarray
    linf: np.ndarray
    krylov_m: np.ndarray
    krylov_capped: np.ndarray
    wall_time_s: float
    prediction_8bit: np.ndarray | None = None


def run_batch(model: nn.Module, job: Job, images: torch.Tensor, labels: torch.Tensor,
              positions: np.ndarray) -> BatchOutcome:
    """Run ``job`` on images (b, C, H, W) in [0, 1] with labels (b,); positions (b,) says which
    images of the set these are. Raises ValueError for bad inputs."""
    check_images(images, "images")
    clean_prediction = metrics.predictions(model, images)
    result = job.make(model)(images, labels)
    points = budget_points(result)
    norms = metrics.perturbation_norms(images, result.adv)
    ssim = metrics.ssim(images, result.adv) if min(images.shape[-2:]) >= 7 else np.full(len(labels), math.nan)
    krylov_m = krylov_capped = np.full(len(labels), math.nan)
    if isinstance(result.trace, SOAETrace) and result.trace.iterations and result.trace.iterations[0].krylov:
        krylov_m = torch.stack([it.krylov.iterations for it in result.trace.iterations]).double().mean(0).cpu().numpy()
        krylov_capped = np.mean([[reason == "max_iter" for reason in it.krylov.stop_reason]
                                 for it in result.trace.iterations], axis=0)
    return BatchOutcome(
        positions=np.asarray(positions, dtype=np.int64), labels=labels.cpu().numpy(),
        clean_prediction=clean_prediction.cpu().numpy(), prediction=points[-1][1].cpu().numpy(),
        budget_grad_evals=np.asarray([g for g, _ in points], dtype=np.float64),
        budget_predictions=torch.stack([p for _, p in points]).cpu().numpy(),
        grad_evals_per_image=float(result.grad_evals), psnr_db=metrics.psnr(images, result.adv),
        ssim=ssim, linf=norms["linf"], krylov_m=krylov_m, krylov_capped=krylov_capped,
        wall_time_s=float(result.wall_time_s),
        prediction_8bit=metrics.predictions(model, to_8bit(result.adv)).cpu().numpy())


@dataclass
class JobResult:
    """A job's batches joined: per-image arrays (n,), the budget curve (K,) and totals
    (prediction_8bit: None when a batch did not record it)."""

    labels: np.ndarray
    clean_prediction: np.ndarray
    prediction: np.ndarray
    budget_grad_evals: np.ndarray
    budget_accuracy: np.ndarray
    grad_evals_per_image: float
    psnr_db: np.ndarray
    ssim: np.ndarray
    linf: np.ndarray
    krylov_m: np.ndarray
    krylov_capped: np.ndarray
    wall_time_s: float
    prediction_8bit: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of images."""
        return len(self.labels)

    @property
    def clean_accuracy(self) -> float:
        """Share of images classified correctly before the attack."""
        return float(np.mean(self.clean_prediction == self.labels))

    @property
    def accuracy(self) -> float:
        """Share of images still classified correctly after the attack (robust accuracy)."""
        return float(np.mean(self.prediction == self.labels))

    @property
    def accuracy_8bit(self) -> float:
        """The same with the adversarial images rounded to 8 bits (NaN when not recorded)."""
        return math.nan if self.prediction_8bit is None else float(np.mean(self.prediction_8bit == self.labels))


def combine(outcomes: list[BatchOutcome]) -> JobResult:
    """Join one job's batches. Budget curves of different length (an attack that stopped early
    on one batch) are padded with each batch's last point: after its last step a batch stays put.
    Budget gradient counts are averaged weighted by batch size."""
    if not outcomes:
        raise ValueError("outcomes must hold at least one batch")
    steps = max(len(o.budget_grad_evals) for o in outcomes)
    sizes = np.asarray([len(o.labels) for o in outcomes], dtype=np.float64)
    labels = np.concatenate([o.labels for o in outcomes])

    def padded(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values, np.repeat(values[-1:], steps - len(values), axis=0)])

    grad_evals = np.stack([padded(o.budget_grad_evals) for o in outcomes])  # (batches, K)
    predictions = np.concatenate([padded(o.budget_predictions) for o in outcomes], axis=1)  # (K, n)
    return JobResult(
        labels=labels, clean_prediction=np.concatenate([o.clean_prediction for o in outcomes]),
        prediction=np.concatenate([o.prediction for o in outcomes]),
        budget_grad_evals=(grad_evals * sizes[:, None]).sum(0) / sizes.sum(),
        budget_accuracy=(predictions == labels[None]).mean(axis=1),
        grad_evals_per_image=float((np.asarray([o.grad_evals_per_image for o in outcomes]) * sizes).sum() / sizes.sum()),
        psnr_db=np.concatenate([o.psnr_db for o in outcomes]), ssim=np.concatenate([o.ssim for o in outcomes]),
        linf=np.concatenate([o.linf for o in outcomes]), krylov_m=np.concatenate([o.krylov_m for o in outcomes]),
        krylov_capped=np.concatenate([o.krylov_capped for o in outcomes]),
        wall_time_s=float(sum(o.wall_time_s for o in outcomes)),
        prediction_8bit=None if any(o.prediction_8bit is None for o in outcomes)
        else np.concatenate([o.prediction_8bit for o in outcomes]))
