"""Tables about the model zoo for the Models page: the registry with what each model card says
(accuracy, robustness, how it was trained), and the paper's Table I layout (models × attacks)
filled with accuracies measured by :mod:`soae_core.compare`.

Model cards are the JSON files :mod:`soae_core.train` writes beside each bundled checkpoint;
missing cards or fields show as NaN / empty text, never as an error.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from soae_core.compare import JobResult
from soae_core.model_card import PAPER_EPS
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
                     **{f"{attack} @ {eps * 255:g}/255": card_accuracy(card, attack, eps) for attack in CARD_ATTACKS},
                     "Test images": (card or {}).get("test_images"),
                     "Training": training_summary(card),
                     "Note": info.description if info.available else info.reason})
    return pd.DataFrame(rows).set_index("Model")


def table_one(results: dict[tuple[str, str], JobResult], infos: list[ModelInfo], attacks: list[str]) -> pd.DataFrame:
    """The paper's Table I layout: one row per model (Architecture, Training method, Images,
    Clean, then one accuracy column per attack), from results keyed by (model name, attack).
    Cells of pairs not (yet) computed are NaN; Images is the smallest count of a model's row."""
    rows = []
    for info in infos:
        done = {attack: results[(info.name, attack)] for attack in attacks if (info.name, attack) in results}
        any_result = next(iter(done.values()), None)
        rows.append({"Model": info.name, "Architecture": info.architecture, "Training method": method_name(info.method),
                     "Images": min(r.n for r in done.values()) if done else 0,
                     "Clean": any_result.clean_accuracy if any_result else math.nan,
                     **{attack: done[attack].accuracy if attack in done else math.nan for attack in attacks}})
    return pd.DataFrame(rows, columns=["Model", "Architecture", "Training method", "Images", "Clean", *attacks]
                        ).set_index("Model")
