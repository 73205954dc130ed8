"""Model cards: the evaluation numbers and machine facts written beside each checkpoint.

``python -m soae_core.model_card --model fmnist-cnn-pgd`` re-evaluates a bundled checkpoint and
updates the evaluation fields of its card (e.g. after the SOAE engine changed), keeping the
training record. ``--describe-only`` rewrites only the card's ``inner_attack`` sentence from its
recorded hyper-parameters (no evaluation), so that the card says what training actually did.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from soae_core.data import load_fashion_mnist, load_samples

PAPER_EPS = 8 / 255
SOAE_EVAL_SETTINGS = {"steps": 4, "hvp": "exact", "tau": 1e-3, "max_krylov": 30, "step_rule": "sign"}


def machine_description() -> dict[str, Any]:
    """CPU model, core count, OS and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``images`` (N, C, H, W) in [0, 1] that ``model`` classifies as ``labels``."""
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(labels), batch_size):
            logits = model(images[begin:begin + batch_size])
            correct += int((logits.argmax(1) == labels[begin:begin + batch_size]).sum())
    return correct / len(labels)


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: Any,
                    batch_size: int, progress: bool, desc: str) -> float:
    """Accuracy on ``attack``'s adversarial examples, built batch by batch."""
    correct = 0
    for begin in tqdm(range(0, len(labels), batch_size), desc=desc, disable=not progress, file=sys.stderr,
                      mininterval=2.0):
        x, y = images[begin:begin + batch_size], labels[begin:begin + batch_size]
        adv = attack(x, y).adv
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    return correct / len(labels)


def evaluate_for_card(model: nn.Module, eps: float, test_subset: int | None = None, pgd_n: int = 1000,
                      soae_n: int = 200, progress: bool = True) -> dict[str, Any]:
    """Clean and robust (PGD-20, SOAE) test accuracy at ``eps`` and at the paper's 8/255, plus
    accuracy on the bundled samples. Clean accuracy uses the first ``test_subset`` test images
    (default all 10 000), PGD-20 the first ``pgd_n`` of those, SOAE the first ``soae_n``.
    The model must be in eval mode with frozen parameters.
    """
    from soae_core.attacks import PGD, SOAE

    test = load_fashion_mnist("test")
    n = len(test) if test_subset is None else min(test_subset, len(test))
    images, labels = test.images[:n], test.labels[:n]
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
        result["sample_set_accuracy"] = accuracy(model, samples.images, samples.labels)
        result["sample_set_images"] = len(samples)
    except ValueError:
        result["sample_set_accuracy"] = None
    return result


def card_with_inner_attack(card: dict[str, Any]) -> dict[str, Any]:
    """``card`` with ``inner_attack`` (placed after ``hyperparameters``) written from its recorded
    objective by :func:`soae_core.training_objectives.describe_inner_attack`; ValueError if the card
    records no objective."""
    from soae_core.training_objectives import ObjectiveConfig, describe_inner_attack

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


def _describe_only(name: str) -> int:
    from soae_core.models import bundled_models_dir

    path = bundled_models_dir() / f"{name}.json"
    try:
        if not path.is_file():
            raise ValueError(f"no card {path}")
        card = card_with_inner_attack(json.loads(path.read_text()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"{path}: {card['inner_attack']}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Re-evaluate a bundled checkpoint and rewrite the evaluation fields of its card."""
    from soae_core.models import bundled_models_dir, load_model

    parser = argparse.ArgumentParser(prog="python -m soae_core.model_card", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--test-subset", type=int, default=None)
    parser.add_argument("--eval-pgd-n", type=int, default=1000)
    parser.add_argument("--eval-soae-n", type=int, default=200)
    parser.add_argument("--describe-only", action="store_true",
                        help="only rewrite the inner_attack sentence from the card's hyperparameters")
    args = parser.parse_args(argv)
    if args.describe_only:
        return _describe_only(args.model)
    try:
        model = load_model(args.model)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = bundled_models_dir() / f"{args.model}.json"
    card = json.loads(path.read_text()) if path.is_file() else {"name": args.model}
    eps = card.get("hyperparameters", {}).get("objective", {}).get("eps", 0.1)
    card.update(evaluate_for_card(model, eps=eps, test_subset=args.test_subset, pgd_n=args.eval_pgd_n,
                                   soae_n=args.eval_soae_n))
    card["evaluation_machine"] = machine_description()
    path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"updated {path}: clean {card['clean_accuracy']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
