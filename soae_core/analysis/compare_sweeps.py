"""What the Compare & Sweeps page computes from attacks on many images (run batch by batch by
:mod:`soae_core.analysis.jobs`): the accuracy, image-quality and budget tables, and the jobs
and tables of SOAE's η, τ and N sweeps (the paper's Figures 1–3, Table IV)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core import metrics
from soae_core.analysis.jobs import Job, JobResult
from soae_core.analysis.settings import AttackSettings
from soae_core.defaults import PAPER_STEPS, STUDY_ETAS, STUDY_TAUS
from soae_core.eight_bit import EIGHT_BIT_COLUMN, still_adversarial_share
from soae_core.targets import choose_targets
from soae_core.validation import check_choice, check_int

SWEEPS = ("eta", "tau", "steps")
DEFAULT_SWEEP_VALUES: dict[str, tuple[float, ...]] = {"eta": STUDY_ETAS, "tau": STUDY_TAUS}
CLEAN_ROW = "Clean (no attack)"
# The images the page offers to attack (at most the bundled set's size).
IMAGE_COUNTS = (10, 20, 50, 100, 150, 200)


def image_counts(available: int) -> list[int]:
    """The choices of n for a set of ``available`` images: :data:`IMAGE_COUNTS` up to it (or just it)."""
    return [n for n in IMAGE_COUNTS if n <= available] or [available]


ACCURACY_8BIT = "Accuracy after 8-bit rounding"


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def fooled_shares(result: JobResult) -> dict[str, float]:
    """The success of an (untargeted) job over the images the model classified correctly before
    the attack: "Fooled", the share whose adversarial example is misclassified, and
    :data:`~soae_core.eight_bit.EIGHT_BIT_COLUMN`, the share still misclassified after rounding the
    example to 8 bits (≤ Fooled; NaN when the predictions after rounding were not recorded).
    Both NaN when no image was classified correctly."""
    correct = result.clean_prediction == result.labels
    adversarial = result.prediction != result.labels
    fooled = float(np.mean(adversarial[correct])) if correct.any() else math.nan
    if result.prediction_8bit is None:
        return {"Fooled": fooled, EIGHT_BIT_COLUMN: math.nan}
    return {"Fooled": fooled,
            EIGHT_BIT_COLUMN: still_adversarial_share(adversarial, result.prediction_8bit != result.labels, correct)}


def accuracy_table(results: dict[str, JobResult]) -> pd.DataFrame:
    """Rows: the clean images, then each job. Columns: Images, Accuracy, Accuracy after 8-bit
    rounding (of the adversarial images, as PNGs would hold them), Fooled (share of the initially
    correct images the attack flips), Adversarial after 8-bit rounding (share of them still
    flipped after rounding, :func:`fooled_shares`), Gradient evals / image, Time (s)."""
    first = next(iter(results.values()))
    rows = [{"Attack": CLEAN_ROW, "Images": first.n, "Accuracy": first.clean_accuracy,
             ACCURACY_8BIT: first.clean_accuracy, "Fooled": math.nan, EIGHT_BIT_COLUMN: math.nan,
             "Gradient evals / image": 0.0, "Time (s)": math.nan}]
    for label, result in results.items():
        rows.append({"Attack": label, "Images": result.n, "Accuracy": result.accuracy,
                     ACCURACY_8BIT: result.accuracy_8bit, **fooled_shares(result),
                     "Gradient evals / image": result.grad_evals_per_image, "Time (s)": result.wall_time_s})
    return pd.DataFrame(rows).set_index("Attack")


def quality_table(results: dict[str, JobResult]) -> pd.DataFrame:
    """Rows: jobs. Columns: means over the images each attack changed — PSNR (dB, data_range 1),
    PSNR in the paper's convention (+20·log10 255 dB), SSIM, L∞ (×1/255) — Changed images, and
    the job's Fooled and Adversarial after 8-bit rounding shares (:func:`fooled_shares`)."""
    rows = []
    for label, result in results.items():
        changed = result.linf > 0
        psnr = _finite_mean(result.psnr_db[changed])
        rows.append({"Attack": label, "Changed images": int(changed.sum()), "PSNR (dB)": psnr,
                     "PSNR, paper's convention (dB)": psnr + metrics.PAPER_PSNR_OFFSET_DB,
                     "SSIM": _finite_mean(result.ssim[changed]), "L∞ (×1/255)": _finite_mean(result.linf[changed]) * 255,
                     **fooled_shares(result)})
    return pd.DataFrame(rows).set_index("Attack")


def budget_table(results: dict[str, JobResult]) -> pd.DataFrame:
    """Accuracy versus gradient evaluations per image: one row per (job, recorded step), with
    the step 0 point (no gradient spent, clean accuracy) first. Columns: Attack, Step,
    Gradient evals / image, Accuracy, Adversarial after 8-bit rounding — the :func:`fooled_shares`
    share of the final examples, on each job's last step only (NaN before: the attacks keep no
    intermediate images to round)."""
    rows = []
    for label, result in results.items():
        rows.append({"Attack": label, "Step": 0, "Gradient evals / image": 0.0, "Accuracy": result.clean_accuracy,
                     EIGHT_BIT_COLUMN: math.nan})
        rows += [{"Attack": label, "Step": k, "Gradient evals / image": float(g), "Accuracy": float(a),
                  EIGHT_BIT_COLUMN: math.nan}
                 for k, (g, a) in enumerate(zip(result.budget_grad_evals, result.budget_accuracy, strict=False), start=1)]
        rows[-1][EIGHT_BIT_COLUMN] = fooled_shares(result)[EIGHT_BIT_COLUMN]
    return pd.DataFrame(rows, columns=["Attack", "Step", "Gradient evals / image", "Accuracy", EIGHT_BIT_COLUMN])


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

    "eta": η, Accuracy, Fooled, Adversarial after 8-bit rounding (:func:`fooled_shares`), Gradient
    evals / image, Time (s). "tau": the same, then Time ÷ time at the largest τ, Gradient evals ÷
    at the largest τ, m mean (Krylov dimension per GMRES solve), At the cap (share of solves that
    hit the Krylov cap). "steps": the :func:`budget_table` of PGD and SOAE with an Iteration
    column (= Step).
    """
    check_choice("sweep", sweep, SWEEPS)
    done = [job for job in jobs if job.label in results]
    if sweep == "steps":
        table = budget_table({job.label: results[job.label] for job in done})
        return table.rename(columns={"Step": "Iteration"})
    rows = []
    for job in done:
        result, value = results[job.label], dict(job.kwargs)[sweep]
        row = {"η" if sweep == "eta" else "τ": value, "Accuracy": result.accuracy, **fooled_shares(result),
               "Gradient evals / image": result.grad_evals_per_image, "Time (s)": result.wall_time_s}
        if sweep == "tau":
            row.update({"m mean": _finite_mean(result.krylov_m), "At the cap": _finite_mean(result.krylov_capped)})
        rows.append(row)
    table = pd.DataFrame(rows)
    if sweep == "tau" and len(table):
        largest = table["τ"].idxmax()
        table.insert(6, "Time ÷ time at the largest τ", table["Time (s)"] / table.loc[largest, "Time (s)"])
        table.insert(7, "Gradient evals ÷ at the largest τ",
                     table["Gradient evals / image"] / table.loc[largest, "Gradient evals / image"])
    return table


@dataclass
class TransferSetup:
    """What the transfer matrix attacks under the sidebar's target rule.

    kept: (n',) int64 positions of the images used among the n offered (all of them, except for a
    chosen target: the images of that class are left out — no attack aims at an image's own
    class). targets: (n',) int64 target classes, or None when untargeted. note: one sentence
    for the page saying what success means and what was left out.
    """

    kept: np.ndarray
    targets: np.ndarray | None
    note: str

    @property
    def targeted(self) -> bool:
        """True when the attacks aim at target classes."""
        return self.targets is not None


def transfer_setup(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: AttackSettings,
                   class_names: tuple[str, ...]) -> TransferSetup:
    """The images and targets of the transfer matrix for ``settings.target_rule``.

    images: (n, C, H, W) in [0, 1]; labels: (n,) true classes; model: the sidebar's model, which
    picks least-likely targets (one forward pass) so that every source model aims at the same
    classes. Untargeted: every image, cells are accuracy. Targeted: success = the model predicts
    the target (:func:`soae_core.transfer.transfer_matrix`'s hit rate).
    """
    rule = settings.target_rule
    labels = torch.as_tensor(labels, dtype=torch.long)
    if not rule.targeted:
        return TransferSetup(np.arange(len(labels)), None,
                             "Untargeted: each cell is that model's accuracy on the examples (lower: the attack "
                             "transfers).")
    kept = np.arange(len(labels))
    left_out = ""
    if rule.mode == "chosen":
        kept = np.flatnonzero(labels.cpu().numpy() != rule.target)
        dropped = len(labels) - len(kept)
        if not len(kept):
            raise ValueError(f"every image is of the target class {class_names[rule.target]}; choose another target")
        if dropped:
            left_out = (f" The {dropped} image{'s' if dropped > 1 else ''} of class {class_names[rule.target]} "
                        f"{'are' if dropped > 1 else 'is'} left out.")
    index, where = torch.from_numpy(kept), next(model.parameters()).device
    targets = choose_targets(rule, model, images[index].to(where), labels[index].to(where), class_names)
    how = {"chosen": f"class {class_names[rule.target]}" if rule.target is not None else "",
           "least_likely": "each image's least likely class (by the sidebar's model)",
           "random": f"a random class per image (seed {rule.seed})"}[rule.mode]
    return TransferSetup(kept, targets.cpu().numpy(),
                         f"Targeted at {how}: each cell is the share of the "
                         f"{len(kept)} examples that model classifies as their target (higher: the attack "
                         f"transfers).{left_out}")


def tables_json(tables: dict[str, pd.DataFrame], model_name: str, n: int, complete: bool,
                settings: AttackSettings) -> bytes:
    """A JSON document (UTF-8 bytes) with the page's tables (one record per row), the model, the
    number of images, whether the run finished and the settings (seed included)."""
    document = {"model": model_name, "images": n, "complete": complete, "settings": settings.as_dict(),
                "tables": {name: json.loads(table.reset_index().to_json(orient="records"))
                           for name, table in tables.items()}}
    return json.dumps(document, indent=2).encode("utf-8")
