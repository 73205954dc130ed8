"""Cost on paper of the main reproduction grid and a SOAT epoch on CIFAR-10, on 1, 8 and 64 ranks.

    python bench/scaling_estimate.py [--device cpu|cuda] [--efficiency E]

From measurements, not guesses, where they exist:

* the main grid's work: gradient evaluations and forward-only passes per image of every cell, read
  from the committed run ``bench/results/reproduction/main/results.json``;
* the per-image cost of one input gradient, one forward pass and one exact Hessian-vector product,
  measured here on ``--device`` for the Fashion-MNIST CNN and the CIFAR-10 ResNet-18 (random
  weights: the cost does not depend on them);
* SOAT's inner cost per example (gradients + Hessian-vector products) from the bundled SOAT card.

Time on K ranks = work ÷ (K · efficiency), efficiency the measured 2-rank parallel efficiency
(``bench/results/distributed.json``) unless given. The evaluation exchanges nothing but the
gathered results, so it scales while every rank has units (cells × image blocks) to take; training
adds one gradient all-reduce per step, which is not modelled here (see README, "Scaling out").
Writes bench/results/scaling_estimate_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import machine, median_seconds, write_result

from soae_core.device import resolve_device, synchronize
from soae_core.hvp import hvp_exact, input_gradient
from soae_core.models.registry import build_model, get_model_info

ROOT = Path(__file__).resolve().parents[1]

MAIN_RUN = ROOT / "bench" / "results" / "reproduction" / "main" / "results.json"
SOAT_CARD = ROOT / "assets" / "models" / "fmnist-cnn-soat.json"
CIFAR_TRAIN_IMAGES = 50_000
RANKS = (1, 8, 64)


def per_image_costs(name: str, device: torch.device, batch: int) -> dict[str, float]:
    """Seconds per image of one input gradient, one forward pass and one exact HVP at ``batch``."""
    model = build_model(name).to(device).eval().requires_grad_(False)
    x = torch.rand((batch, *get_model_info(name).input_shape), device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    v = torch.randn_like(x)

    def synced(fn):
        return lambda: (fn(), synchronize(device))

    def forward():
        with torch.no_grad():
            model(x)

    repeats = 5 if x[0].numel() > 2000 else 20
    return {"batch": batch,
            "gradient_s": median_seconds(synced(lambda: input_gradient(model, x, y)), repeats, 1) / batch,
            "forward_s": median_seconds(synced(forward), repeats, 1) / batch,
            "exact_hvp_s": median_seconds(synced(lambda: hvp_exact(model, x, y, v)), repeats, 1) / batch}


def main_grid_work() -> dict[str, float]:
    """Gradient evaluations and forward-only passes of the committed main grid (all cells, all images)."""
    run = json.loads(MAIN_RUN.read_text())
    grads = sum(cell["grad_evals_per_image"] * cell["n"] for cell in run["attacks"])
    forwards = sum((cell["forward_passes_per_image"] - cell["grad_evals_per_image"]) * cell["n"]
                   for cell in run["attacks"])
    return {"cells": len(run["attacks"]), "images_per_cell": run["meta"]["n"], "gradients": grads,
            "forward_only": forwards, "measured_grid_s": run["meta"]["grid_duration_s"],
            "measured_with": f"{run['config']['jobs']} worker processes on {run['meta']['machine']}"}


def human(seconds: float) -> str:
    """A duration for people: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--efficiency", type=float, default=None,
                        help="parallel efficiency per rank (default: the measured 2-rank one, else 1)")
    parser.add_argument("--assume-cifar-gradient-ms", type=float, default=None,
                        help="on paper: a per-image ResNet-18 gradient cost (ms) for a device not at hand; "
                             "forward and HVP keep their measured ratios to the gradient")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    efficiency = args.efficiency
    measured = ROOT / "bench" / "results" / "distributed.json"
    if efficiency is None and measured.is_file():
        # capped at 1: a measured efficiency above 1 only says the machine's load changed during the runs
        efficiency = min(1.0, json.loads(measured.read_text())["evaluation"]["efficiency"])
    efficiency = efficiency or 1.0

    fmnist = per_image_costs("fmnist-cnn-std", device, 128)
    cifar = per_image_costs("cifar10-resnet18", device, 32 if device.type == "cpu" else 256)
    if args.assume_cifar_gradient_ms is not None:
        scale = args.assume_cifar_gradient_ms / 1e3 / cifar["gradient_s"]
        cifar = {**{k: v * scale for k, v in cifar.items() if k.endswith("_s")}, "batch": cifar["batch"],
                 "assumed_gradient_ms": args.assume_cifar_gradient_ms}
    work = main_grid_work()
    grid_fmnist_s = work["gradients"] * fmnist["gradient_s"] + work["forward_only"] * fmnist["forward_s"]
    # The same grid (same attacks, budgets, images per cell) on the CIFAR-10 ResNet-18.
    grid_cifar_s = work["gradients"] * cifar["gradient_s"] + work["forward_only"] * cifar["forward_s"]
    card = json.loads(SOAT_CARD.read_text())
    inner = card["grad_evals_per_example_per_epoch"]  # 1 gradient + its Hessian-vector products
    # One SOAT example: 1 input gradient, (inner − 1) exact HVPs, 1 training forward/backward (≈ 1 gradient).
    soat_example_s = 2 * cifar["gradient_s"] + (inner - 1) * cifar["exact_hvp_s"]
    soat_epoch_s = CIFAR_TRAIN_IMAGES * soat_example_s
    table = {f"{k} ranks": {"main_grid_fmnist_s": grid_fmnist_s / (k * efficiency),
                            "main_grid_cifar10_resnet18_s": grid_cifar_s / (k * efficiency),
                            "soat_epoch_cifar10_resnet18_s": soat_epoch_s / (k * efficiency)} for k in RANKS}
    out = {"device": str(device), "efficiency": efficiency, "per_image": {"fmnist-cnn": fmnist,
                                                                          "cifar10-resnet18": cifar},
           "main_grid": work, "soat_inner_grad_evals_per_example": inner, "estimates": table}
    suffix = "_assumed" if args.assume_cifar_gradient_ms is not None else ""
    path = write_result(f"scaling_estimate_{device.type}{suffix}", out)
    print(f"machine: {machine()}; device {device}; efficiency {efficiency:.2f}")
    for name, costs in out["per_image"].items():
        print(f"{name}: gradient {costs['gradient_s'] * 1e3:.3f} ms/image, forward {costs['forward_s'] * 1e3:.3f}, "
              f"exact HVP {costs['exact_hvp_s'] * 1e3:.3f} (batch {costs['batch']})")
    print(f"main grid: {work['gradients']:.3g} gradients + {work['forward_only']:.3g} forward-only passes "
          f"({work['cells']} cells × {work['images_per_cell']} images)")
    for k, row in table.items():
        print(f"{k:>9}: " + ", ".join(f"{key} {human(value)}" for key, value in row.items()))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
