"""Training cost: one standard epoch on all 60 000 Fashion-MNIST images, and SOAT / PGD-AT cost
per epoch (timed on the first --n training images, scaled to 60 000) with gradient evaluations
per training example. Writes bench/results/training.json.

The standard epoch is timed with 1 and with 2 torch threads (on the shared, loaded 2-core
machine 2 threads were an order of magnitude slower); PGD-AT and SOAT with --threads.

Usage: python bench/bench_training.py [--n 1024] [--threads 1] [--skip-std]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402

from soae_core.data import SampleSet, load_fashion_mnist  # noqa: E402
from soae_core.models import build_model  # noqa: E402
from soae_core.experiments.training import TrainConfig, make_optimizer, train_one_epoch  # noqa: E402
from soae_core.experiments.training_objectives import ObjectiveConfig  # noqa: E402

FULL_EPOCH = 60_000
SOAT = ObjectiveConfig(method="soat", eps=0.1, soae_steps=1, soae_hvp="exact", soae_max_krylov=10,
                       soae_step_rule="sign")
PGD_AT = ObjectiveConfig(method="pgd", eps=0.1, alpha=0.025, attack_steps=7)


def time_epoch(model_name: str, objective: ObjectiveConfig, train: SampleSet) -> dict:
    """Train one epoch of ``train`` from a fresh seeded model; the record plus the load average."""
    cfg = TrainConfig(model=model_name, epochs=1, objective=objective)
    torch.manual_seed(0)
    model = build_model(model_name)
    optimizer, _ = make_optimizer(cfg, model)
    load_before = os.getloadavg()[0]
    record = train_one_epoch(model, optimizer, train, cfg, epoch=0, progress=False)
    record["images"] = len(train)
    record["seconds_per_60k_epoch"] = record["seconds"] * FULL_EPOCH / len(train)
    record["load_average_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="training images for the SOAT / PGD-AT timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for PGD-AT and SOAT")
    parser.add_argument("--skip-std", action="store_true")
    args = parser.parse_args()
    full = load_fashion_mnist("train")
    subset = SampleSet(full.images[:args.n], full.labels[:args.n], full.class_names)
    results = {}
    if not args.skip_std:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            key = f"std_epoch_60k_{threads}_threads"
            results[key] = time_epoch("fmnist-cnn-std", ObjectiveConfig(method="std"), full)
            print(f"STD epoch (60k), {threads} threads: {results[key]['seconds']:.1f} s", file=sys.stderr)
    torch.set_num_threads(args.threads)
    results["threads"] = args.threads
    for label, objective in (("pgd_at", PGD_AT), ("soat", SOAT)):
        results[label] = time_epoch("fmnist-cnn-std", objective, subset)
        print(f"{label}: {results[label]['seconds_per_60k_epoch']:.0f} s per 60k epoch, "
              f"{results[label]['grad_evals_per_example']:.2f} grad evals per example", file=sys.stderr)
    results["soat_settings"] = {"eps": SOAT.eps, "steps": SOAT.soae_steps, "hvp": SOAT.soae_hvp,
                                "max_krylov": SOAT.soae_max_krylov, "step_rule": SOAT.soae_step_rule}
    print(write_result("training", results), file=sys.stderr)


if __name__ == "__main__":
    main()
