"""Why SOAE without curvature is stronger: what one step along δ̃ ≈ H⁻¹g and along g does to every
wrong class's logit advantage a_k = z_k − z_y, to first order (Δa = (J_k − J_y)·δ) and measured.

For each model and ε, on the first n Fashion-MNIST test images (the images the model gets right):
SOAE's first sign step (α/N)·sign(δ̃) (exact Hessian-vector products, τ = 1e-3, ≤ 30 Krylov steps,
N = 4, α = 2.5ε — the settings of the `soae-exact` run) against the same step along sign(g).
Per image from :func:`soae_core.analysis.krylov_inspector.first_order_margins` (the app's computation), summarised
by :func:`soae_core.analysis.krylov_inspector.summarise_margins` (medians over the images).

Run: `python bench/measure_margins.py [--models ...] [--n 1000] [--eps 8/255 0.1]`.
Writes bench/results/margins.json and prints a Markdown table and the counts REPRODUCTION.md cites;
`--from-json` prints them again from the committed JSON without recomputing.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import pandas as pd
import torch
from common import write_result

from soae_core.analysis.krylov_inspector import first_order_margins, summarise_margins
from soae_core.data import load_fashion_mnist
from soae_core.models import load_model

COLUMNS = {"nearest_gain": "Δa nearest wrong class", "mean_gain": "Δa mean over wrong classes",
           "spread": "spread (std ÷ mean)", "nearest_is_top": "largest Δa on the nearest class",
           "crossed_first_order": "fooled after 1 step (1st order)", "crossed_actual": "fooled after 1 step (measured)",
           "first_order_corr": "corr(1st order, measured)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fmnist-cnn-std", "fmnist-cnn-pgd", "fmnist-cnn-trades",
                                                         "fmnist-cnn-soat", "fmnist-cnn-smooth-std"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--eps", nargs="+", default=["8/255", "0.1"])
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--from-json", action="store_true", help="reprint from bench/results/margins.json")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads((Path(__file__).resolve().parent / "results" / "margins.json").read_text())
        report(saved["rows"], saved["n"])
        return
    torch.set_num_threads(args.threads)
    test = load_fashion_mnist("test")
    images, labels = test.images[:args.n], test.labels[:args.n]
    rows = []
    for name in args.models:
        model = load_model(name)
        for eps_text in args.eps:
            eps = float(Fraction(eps_text))
            parts = [first_order_margins(model, images[i:i + args.batch_size], labels[i:i + args.batch_size], eps=eps)
                     for i in range(0, args.n, args.batch_size)]
            change = type(parts[0])(**{field: (torch.cat([getattr(p, field) for p in parts])
                                               if isinstance(getattr(parts[0], field), torch.Tensor)
                                               else getattr(parts[0], field))
                                       for field in parts[0].__dataclass_fields__})
            for row in summarise_margins(change):
                rows.append({"model": name, "ε": eps_text, "images": int(change.correct.sum()), **row})
            print(f"{name} ε={eps_text} done", file=sys.stderr)
    path = write_result("margins", {"command": " ".join(["python bench/measure_margins.py", *sys.argv[1:]]),
                                    "n": args.n, "rows": rows})
    report(rows, args.n)
    print(f"\nwritten: {path}")


def report(rows: list[dict], n: int) -> None:
    """The Markdown table and, per model × ε cell, how often the step along g beats the step along δ̃."""
    table = pd.DataFrame(rows).rename(columns=COLUMNS)
    print(f"Medians over the correctly classified images among the first {n} test images; one step of "
          "α/N = 2.5ε/4 along sign(δ̃) (exact products) or sign(g); Δa in logits (nats).\n")
    print(table.round(3).to_markdown(index=False))
    frame = pd.DataFrame(rows)
    by_cell = frame.pivot_table(index=["model", "ε"], columns="direction", sort=False,
                                values=["nearest_gain", "nearest_is_top", "spread", "crossed_actual"])
    cells = len(by_cell)
    print(f"\nCells (model × ε): {cells}. The nearest wrong class gains more along g than along δ̃ in "
          f"{int((by_cell['nearest_gain']['g'] > by_cell['nearest_gain']['δ̃']).sum())} of {cells}; the largest "
          f"gain falls on the nearest class more often along g in "
          f"{int((by_cell['nearest_is_top']['g'] > by_cell['nearest_is_top']['δ̃']).sum())} of {cells}; δ̃ spreads "
          f"its gains more evenly (smaller std ÷ mean) in {int((by_cell['spread']['δ̃'] < by_cell['spread']['g']).sum())} "
          f"of {cells}; one step along g fools more images (measured) in "
          f"{int((by_cell['crossed_actual']['g'] > by_cell['crossed_actual']['δ̃']).sum())} of {cells}.")


if __name__ == "__main__":
    main()
