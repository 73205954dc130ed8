"""What the Compare & Sweeps page computes from attacks on many images (run batch by batch by
:mod:`soae_core.analysis.jobs`): the accuracy, image-quality and budget tables, and the jobs
and tables of SOAE's η, τ and N sweeps (the paper's Figures 1–3, Table IV)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from soae_core import metrics
from soae_core.analysis.jobs import Job, JobResult
from soae_core.analysis.settings import AttackSettings
from soae_core.defaults import PAPER_STEPS, STUDY_ETAS, STUDY_TAUS
from soae_core.validation import check_choice, check_int

SWEEPS = ("eta", "tau", "steps")
DEFAULT_SWEEP_VALUES: dict[str, tuple[float, ...]] = {"eta": STUDY_ETAS, "tau": STUDY_TAUS}
CLEAN_ROW = "Clean (no attack)"
# What the page shows in a cell whose number does not apply (NaN: the clean row's Fooled and Time).
NOT_APPLICABLE = "—"
# The images the page offers to attack (at most the bundled set's size).
IMAGE_COUNTS = (10, 20, 50, 100, 150, 200)


def image_counts(available: int) -> list[int]:
    """The choices of n for a set of ``available`` images: :data:`IMAGE_COUNTS` up to it (or just it)."""
    return [n for n in IMAGE_COUNTS if n <= available] or [available]


ACCURACY_8BIT = "Accuracy after 8-bit rounding"


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def accuracy_table(results: dict[str, JobResult]) -> pd.DataFrame:
    """Rows: the clean images, then each job. Columns: Images, Accuracy, Accuracy after 8-bit
    rounding (of the adversarial images, as PNGs would hold them), Fooled (share of the initially
    correct images the attack flips), Gradient evals / image, Time (s)."""
    first = next(iter(results.values()))
    rows = [{"Attack": CLEAN_ROW, "Images": first.n, "Accuracy": first.clean_accuracy,
             ACCURACY_8BIT: first.clean_accuracy, "Fooled": math.nan, "Gradient evals / image": 0.0,
             "Time (s)": math.nan}]
    for label, result in results.items():
        correct = result.clean_prediction == result.labels
        fooled = float(np.mean(result.prediction[correct] != result.labels[correct])) if correct.any() else math.nan
        rows.append({"Attack": label, "Images": result.n, "Accuracy": result.accuracy,
                     ACCURACY_8BIT: result.accuracy_8bit, "Fooled": fooled,
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
                 for k, (g, a) in enumerate(zip(result.budget_grad_evals, result.budget_accuracy, strict=False), start=1)]
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
            soae["alpha"] = soae_kwargs["alpha"] / soae_kwargs.get("steps", PAPER_STEPS) * steps
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


def tables_json(tables: dict[str, pd.DataFrame], model_name: str, n: int, complete: bool,
                settings: AttackSettings) -> bytes:
    """A JSON document (UTF-8 bytes) with the page's tables (one record per row), the model, the
    number of images, whether the run finished and the settings (seed included)."""
    document = {"model": model_name, "images": n, "complete": complete, "settings": settings.as_dict(),
                "tables": {name: json.loads(table.reset_index().to_json(orient="records"))
                           for name, table in tables.items()}}
    return json.dumps(document, indent=2).encode("utf-8")
