"""Model cards: the evaluation numbers written beside each checkpoint (by training, and by
``python -m soae_core.model_card``, which re-evaluates a bundled checkpoint)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from soae_core import __version__
from soae_core.data import load_fashion_mnist, load_samples
from soae_core.defaults import DEFAULT_MAX_KRYLOV, PAPER_EPS, PAPER_STEPS, PAPER_TAU
from soae_core.experiments.machine import machine_facts
from soae_core.metrics import accuracy, predictions

# Test images the cards attack: PGD-20 on the first 1000, SOAE (slower) on the first 200.
CARD_PGD_IMAGES = 1000
CARD_SOAE_IMAGES = 200
# SOAE as the cards evaluate it: the paper's N and τ with exact products and the sign step.
SOAE_EVAL_SETTINGS = {"steps": PAPER_STEPS, "hvp": "exact", "tau": PAPER_TAU, "max_krylov": DEFAULT_MAX_KRYLOV,
                      "step_rule": "sign"}


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: Any,
                    batch_size: int, progress: bool, desc: str) -> float:
    """Accuracy on ``attack``'s adversarial examples, built batch by batch."""
    correct = 0
    for begin in tqdm(range(0, len(labels), batch_size), desc=desc, disable=not progress, file=sys.stderr,
                      mininterval=2.0):
        x, y = images[begin:begin + batch_size], labels[begin:begin + batch_size]
        correct += int((predictions(model, attack(x, y).adv) == y).sum())
    return correct / len(labels)


def evaluate_for_card(model: nn.Module, eps: float, test_subset: int | None = None, pgd_n: int = CARD_PGD_IMAGES,
                      soae_n: int = CARD_SOAE_IMAGES, progress: bool = True) -> dict[str, Any]:
    """Clean and robust (PGD-20, SOAE) test accuracy at ``eps`` and at the paper's 8/255, plus
    accuracy on the bundled samples. Clean accuracy uses the first ``test_subset`` test images
    (default all 10 000), PGD-20 the first ``pgd_n`` of those, SOAE the first ``soae_n``.
    The model must be in eval mode with frozen parameters.
    """
    from soae_core.attacks import PGD, SOAE

    test = load_fashion_mnist("test")
    n = len(test) if test_subset is None else min(test_subset, len(test))
    device = next(model.parameters()).device  # the card is evaluated where the model is
    images, labels = test.images[:n].to(device), test.labels[:n].to(device)
    pgd_n, soae_n = min(pgd_n, n), min(soae_n, n)
    result: dict[str, Any] = {"clean_accuracy": accuracy(model, images, labels), "test_images": n,
                              "robust_accuracy": [], "evaluated_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    for eval_eps in sorted({float(eps), PAPER_EPS}):
        start = time.perf_counter()
        pgd = PGD(model, eps=eval_eps, steps=20, alpha=eval_eps / 4)
        acc = robust_accuracy(model, images[:pgd_n], labels[:pgd_n], pgd, 500, progress, f"PGD-20 eps={eval_eps:.4f}")
        result["robust_accuracy"].append({"attack": "PGD-20", "eps": eval_eps, "alpha": eval_eps / 4,
                                          "test_images": pgd_n, "accuracy": acc,
                                          "seconds": round(time.perf_counter() - start, 1)})
        if soae_n > 0:
            start = time.perf_counter()
            soae = SOAE(model, eps=eval_eps, keep_images=False, **SOAE_EVAL_SETTINGS)
            acc = robust_accuracy(model, images[:soae_n], labels[:soae_n], soae, 250, progress,
                                  f"SOAE eps={eval_eps:.4f}")
            result["robust_accuracy"].append({"attack": "SOAE", "eps": eval_eps, **SOAE_EVAL_SETTINGS,
                                              "test_images": soae_n, "accuracy": acc,
                                              "seconds": round(time.perf_counter() - start, 1)})
    try:
        samples = load_samples("fashion_mnist")
        result["sample_set_accuracy"] = accuracy(model, samples.images.to(device), samples.labels.to(device))
        result["sample_set_images"] = len(samples)
    except ValueError:
        result["sample_set_accuracy"] = None
    return result


def card_with_inner_attack(card: dict[str, Any]) -> dict[str, Any]:
    """``card`` with ``inner_attack`` (placed after ``hyperparameters``) written from its recorded
    objective by :func:`soae_core.experiments.training_objectives.describe_inner_attack`; ValueError
    if the card records no objective."""
    from soae_core.experiments.training_objectives import ObjectiveConfig, describe_inner_attack

    objective = card.get("hyperparameters", {}).get("objective")
    if not isinstance(objective, dict):
        raise ValueError(f"card {card.get('name')!r} records no hyperparameters.objective to describe")
    text = describe_inner_attack(ObjectiveConfig(**objective))
    out: dict[str, Any] = {}
    for key, value in card.items():
        if key != "inner_attack":
            out[key] = value
        if key == "hyperparameters":
            out["inner_attack"] = text
    return out


def update_card(model: nn.Module, card_path: Path, name: str, test_subset: int | None = None,
                pgd_n: int = CARD_PGD_IMAGES, soae_n: int = CARD_SOAE_IMAGES) -> dict[str, Any]:
    """Re-evaluate ``model`` (:func:`evaluate_for_card` at the card's training ε, 0.1 without
    one) and rewrite the evaluation fields of the card at ``card_path`` (created if missing),
    keeping its training record. Returns the card."""
    card = json.loads(card_path.read_text()) if card_path.is_file() else {"name": name}
    eps = card.get("hyperparameters", {}).get("objective", {}).get("eps", 0.1)
    card.update(evaluate_for_card(model, eps=eps, test_subset=test_subset, pgd_n=pgd_n, soae_n=soae_n))
    card["evaluation_machine"] = machine_facts()
    card["evaluation_soae_lab_version"] = __version__
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card
