"""Tables about the model zoo for the Models page: the registry with what each model card says
(accuracy, robustness, how it was trained), and the paper's Table I layout (models × attacks)
filled with accuracies measured by :mod:`soae_core.analysis.jobs`.

Model cards are the JSON files ``python -m soae_core.train`` writes beside each bundled checkpoint;
missing cards or fields show as NaN / empty text, never as an error.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from soae_core.analysis.jobs import Job, JobResult
from soae_core.analysis.settings import AttackSettings
from soae_core.data import SAMPLE_DATASETS
from soae_core.defaults import PAPER_EPS
from soae_core.models import ModelInfo

# The paper's Table I names training methods in capitals.
METHOD_NAMES = {"std": "STD", "pgd": "PGD", "trades": "TRADES", "soat": "SOAT", "user": "user weights"}
CARD_ATTACKS = ("PGD-20", "SOAE")


def method_name(method: str) -> str:
    """'pgd' → 'PGD' (the paper's spelling); unknown methods unchanged."""
    return METHOD_NAMES.get(method, method)


def card_accuracy(card: dict[str, Any] | None, attack: str, eps: float) -> float:
    """The robust accuracy a model card records for ``attack`` at ``eps`` (NaN if none)."""
    for entry in (card or {}).get("robust_accuracy", []):
        if entry.get("attack") == attack and math.isclose(float(entry.get("eps", -1)), eps, rel_tol=1e-6):
            return float(entry["accuracy"])
    return math.nan


def training_summary(card: dict[str, Any] | None) -> str:
    """How a bundled model was trained, in one line (from its card): epochs, optimiser, objective
    and budget, training time and machine. '' without a card."""
    if not card:
        return ""
    hyper = card.get("hyperparameters", {})
    objective = hyper.get("objective", {})
    method = objective.get("method", card.get("method", "?"))
    parts = [f"{card.get('epochs', '?')} epochs, {hyper.get('optimizer', '?')} lr {hyper.get('lr', '?')}"]
    if hyper.get("train_subset"):
        parts.append(f"{hyper['train_subset']} training images")
    if method in ("pgd", "trades"):
        parts.append(f"{method_name(method)} with {objective.get('attack_steps', '?')}-step PGD, "
                     f"ε = {objective.get('eps', float('nan')):.3g}")
    elif method == "soat":
        parts.append(f"SOAT with {objective.get('soae_steps', '?')}-step SOAE ({objective.get('soae_hvp', '?')} "
                     f"products), ε = {objective.get('eps', float('nan')):.3g}")
    else:
        parts.append(method_name(method))
    seconds = card.get("wall_time_s", {}).get("training")
    machine = card.get("machine", {})
    if seconds is not None:
        parts.append(f"{seconds:.0f} s on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores)")
    return "; ".join(parts)


def card_column(attack: str, eps: float) -> str:
    """The :func:`zoo_table` column of a card's robust accuracy: 'PGD-20 @ 8/255'."""
    return f"{attack} @ {eps * 255:g}/255"


def zoo_table(infos: list[ModelInfo], eps: float = PAPER_EPS) -> pd.DataFrame:
    """One row per registered model, indexed by name: Dataset, Architecture, Method, Available,
    Clean accuracy, PGD-20 and SOAE accuracy at ``eps`` (from the card), Test images (of the
    clean accuracy), Training (:func:`training_summary`), Note (why unavailable, else the
    description)."""
    rows = []
    for info in infos:
        card = info.card
        rows.append({"Model": info.name, "Dataset": info.dataset, "Architecture": info.architecture,
                     "Method": method_name(info.method), "Available": info.available,
                     "Clean accuracy": float((card or {}).get("clean_accuracy", math.nan)),
                     **{card_column(attack, eps): card_accuracy(card, attack, eps) for attack in CARD_ATTACKS},
                     "Test images": (card or {}).get("test_images"),
                     "Training": training_summary(card),
                     "Note": info.description if info.available else info.reason})
    return pd.DataFrame(rows).set_index("Model")


def bundled_models(infos: list[ModelInfo]) -> list[ModelInfo]:
    """The available models whose dataset has bundled test images (the rows of Table I)."""
    return [info for info in infos if info.available and info.dataset in SAMPLE_DATASETS]


def table_one_tasks(infos: list[ModelInfo], attacks: list[str],
                    settings: AttackSettings) -> list[tuple[ModelInfo, Job]]:
    """One (model, job) per cell of Table I: every attack at the settings' budget on every model,
    labelled 'model · attack'."""
    return [(info, Job.of(f"{info.name} · {attack}", attack, settings.attack_kwargs(attack, info.dataset)))
            for info in infos for attack in attacks]


def table_one(tasks: list[tuple[ModelInfo, Job]], results: dict[str, JobResult], infos: list[ModelInfo],
              attacks: list[str]) -> pd.DataFrame:
    """The paper's Table I layout: one row per model (Architecture, Training method, Images,
    Clean, then one accuracy column per attack), from the results (keyed by job label) of
    :func:`table_one_tasks`. Cells not (yet) computed are NaN; Images is the smallest count of a
    model's row."""
    keyed = {(info.name, job.attack): results[job.label] for info, job in tasks if job.label in results}
    rows = []
    for info in infos:
        done = {attack: keyed[(info.name, attack)] for attack in attacks if (info.name, attack) in keyed}
        any_result = next(iter(done.values()), None)
        rows.append({"Model": info.name, "Architecture": info.architecture, "Training method": method_name(info.method),
                     "Images": min(r.n for r in done.values()) if done else 0,
                     "Clean": any_result.clean_accuracy if any_result else math.nan,
                     **{attack: done[attack].accuracy if attack in done else math.nan for attack in attacks}})
    return pd.DataFrame(rows, columns=["Model", "Architecture", "Training method", "Images", "Clean", *attacks]
                        ).set_index("Model")
