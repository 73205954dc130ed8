"""Attacks on many images, cut into small units so an interactive app can show progress, stop
between units and cache each one: the computation behind the Compare & Sweeps page and the
Models page's Table I.

A :class:`Job` is one attack configuration (a row of a table or a point of a sweep). Running a
job on one batch of images gives a :class:`BatchOutcome` of per-image NumPy arrays;
:func:`combine` joins a job's batches, and the ``*_table`` functions turn combined results into
the pandas tables the pages show. Budget curves (accuracy after each recorded step versus
gradient evaluations) come from :func:`soae_core.evaluate.budget_points`, the evaluation CLI's
own reading of the attack traces, so app and CLI count alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core import metrics
from soae_core.attacks import ATTACKS, Attack
from soae_core.attacks.soae import SOAETrace
from soae_core.evaluate import budget_points
from soae_core.validation import check_choice, check_images, check_int

SWEEPS = ("eta", "tau", "steps")
DEFAULT_SWEEP_VALUES: dict[str, tuple[float, ...]] = {"eta": (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
                                                      "tau": (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)}
CLEAN_ROW = "Clean (no attack)"


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
        return ATTACKS[self.attack](model, **dict(self.kwargs))


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


def run_batch(model: nn.Module, job: Job, images: torch.Tensor, labels: torch.Tensor,
              positions: np.ndarray) -> BatchOutcome:
    """Run ``job`` on images (b, C, H, W) in [0, 1] with labels (b,); positions (b,) says which
    images of the set these are. Raises ValueError for bad inputs."""
    check_images(images, "images")
    with torch.no_grad():
        clean_prediction = model(images).argmax(dim=1)
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
        ssim=ssim, linf=norms["linf"], krylov_m=krylov_m, krylov_capped=krylov_capped, wall_time_s=float(result.wall_time_s))


@dataclass
class JobResult:
    """A job's batches joined: per-image arrays (n,), the budget curve (K,) and totals."""

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
        wall_time_s=float(sum(o.wall_time_s for o in outcomes)))


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def accuracy_table(results: dict[str, JobResult]) -> pd.DataFrame:
    """Rows: the clean images, then each job. Columns: Images, Accuracy, Fooled (share of the
    initially correct images the attack flips), Gradient evals / image, Time (s)."""
    first = next(iter(results.values()))
    rows = [{"Attack": CLEAN_ROW, "Images": first.n, "Accuracy": first.clean_accuracy, "Fooled": math.nan,
             "Gradient evals / image": 0.0, "Time (s)": math.nan}]
    for label, result in results.items():
        correct = result.clean_prediction == result.labels
        fooled = float(np.mean(result.prediction[correct] != result.labels[correct])) if correct.any() else math.nan
        rows.append({"Attack": label, "Images": result.n, "Accuracy": result.accuracy, "Fooled": fooled,
                     "Gradient evals / image": result.grad_evals_per_image, "Time (s)": result.wall_time_s})
    return pd.DataFrame(rows).set_index("Attack")


def quality_table(results: dict[str, JobResult]) -> pd.DataFrame:
    """Rows: jobs. Columns: means over the images each attack changed — PSNR (dB, data_range 1),
    PSNR in the paper's convention (+20·log10 255 dB), SSIM, L∞ (×1/255) — and Changed images."""
    rows = []
    for label, result in results.items():
        changed = result.linf > 0
        psnr = _finite_mean(result.psnr_db[changed])
        rows.append({"Attack": label, "Changed images": int(changed.sum()), "PSNR (dB)": psnr,
                     "PSNR, paper's convention (dB)": psnr + metrics.PAPER_PSNR_OFFSET_DB,
                     "SSIM": _finite_mean(result.ssim[changed]), "L∞ (×1/255)": _finite_mean(result.linf[changed]) * 255})
    return pd.DataFrame(rows).set_index("Attack")


def budget_table(results: dict[str, JobResult]) -> pd.DataFrame:
    """Accuracy versus gradient evaluations per image: one row per (job, recorded step), with
    the step 0 point (no gradient spent, clean accuracy) first. Columns: Attack, Step,
    Gradient evals / image, Accuracy."""
    rows = []
    for label, result in results.items():
        rows.append({"Attack": label, "Step": 0, "Gradient evals / image": 0.0, "Accuracy": result.clean_accuracy})
        rows += [{"Attack": label, "Step": k, "Gradient evals / image": float(g), "Accuracy": float(a)}
                 for k, (g, a) in enumerate(zip(result.budget_grad_evals, result.budget_accuracy), start=1)]
    return pd.DataFrame(rows, columns=["Attack", "Step", "Gradient evals / image", "Accuracy"])


def sweep_jobs(sweep: str, soae_kwargs: dict[str, Any], pgd_kwargs: dict[str, Any] | None = None,
               values: tuple[float, ...] | None = None, max_krylov: int = 100, steps: int = 20) -> list[Job]:
    """The jobs of one sweep, SOAE with ``soae_kwargs`` as the base.

    "eta": finite-difference SOAE at each η (paper Figure 1). "tau": SOAE at each τ with the
    Krylov cap raised to ``max_krylov`` (Figure 2, Table IV). "steps": PGD (``pgd_kwargs``) and
    SOAE, ``steps`` iterations each, read after every iteration (Figure 3); SOAE's total step
    α is scaled so each iteration moves as far as with the base N.
    """
    check_choice("sweep", sweep, SWEEPS)
    if sweep == "steps":
        if pgd_kwargs is None:
            raise ValueError("pgd_kwargs must be given for the 'steps' sweep")
        steps = check_int("steps", steps)
        soae = dict(soae_kwargs, steps=steps)
        if soae_kwargs.get("alpha") is not None:
            soae["alpha"] = soae_kwargs["alpha"] / soae_kwargs.get("steps", 4) * steps
        return [Job.of("PGD", "PGD", dict(pgd_kwargs, steps=steps)), Job.of("SOAE", "SOAE", soae)]
    values = DEFAULT_SWEEP_VALUES[sweep] if values is None else tuple(values)
    if sweep == "eta":
        return [Job.of(f"η = {v:g}", "SOAE", dict(soae_kwargs, eta=v, hvp="finite_difference")) for v in values]
    cap = check_int("max_krylov", max_krylov)
    return [Job.of(f"τ = {v:g}", "SOAE", dict(soae_kwargs, tau=v, max_krylov=cap)) for v in values]


def sweep_table(sweep: str, jobs: list[Job], results: dict[str, JobResult]) -> pd.DataFrame:
    """The table of one finished (or partial: missing jobs are left out) sweep.

    "eta": η, Accuracy, Gradient evals / image, Time (s). "tau": τ, Accuracy, Gradient evals /
    image, Time (s), Time ÷ time at the largest τ, Gradient evals ÷ at the largest τ, m mean (Krylov dimension per GMRES solve), At the cap (share of
    solves that hit the Krylov cap). "steps": the :func:`budget_table` of PGD and
    SOAE with an Iteration column (= Step).
    """
    check_choice("sweep", sweep, SWEEPS)
    done = [job for job in jobs if job.label in results]
    if sweep == "steps":
        table = budget_table({job.label: results[job.label] for job in done})
        return table.rename(columns={"Step": "Iteration"})
    rows = []
    for job in done:
        result, value = results[job.label], dict(job.kwargs)[sweep]
        row = {"η" if sweep == "eta" else "τ": value, "Accuracy": result.accuracy,
               "Gradient evals / image": result.grad_evals_per_image, "Time (s)": result.wall_time_s}
        if sweep == "tau":
            row.update({"m mean": _finite_mean(result.krylov_m), "At the cap": _finite_mean(result.krylov_capped)})
        rows.append(row)
    table = pd.DataFrame(rows)
    if sweep == "tau" and len(table):
        largest = table["τ"].idxmax()
        table.insert(4, "Time ÷ time at the largest τ", table["Time (s)"] / table.loc[largest, "Time (s)"])
        table.insert(5, "Gradient evals ÷ at the largest τ",
                     table["Gradient evals / image"] / table.loc[largest, "Gradient evals / image"])
    return table
