"""Which SOAE step rule, and which Hessian-vector product? A measurement, not a speed benchmark.

Accuracy of a bundled model on the bundled Fashion-MNIST samples under SOAE with every step
rule × product, at equal N, next to FGSM and PGD-20, at ε = 8/255 and 0.1. The README's
"Why the sign step" table comes from this script.

Run: `python bench/measure_soae_step_rule.py [--model fmnist-cnn-std] [--n 200]`.
Writes bench/results/soae_step_rule_<model>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402
from soae_core.attacks import FGSM, PGD, SOAE  # noqa: E402
from soae_core.attacks.soae import STEP_RULES  # noqa: E402
from soae_core.data import load_samples  # noqa: E402
from soae_core.metrics import accuracy  # noqa: E402
from soae_core.models import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fmnist-cnn-std")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    model = load_model(args.model)
    samples = load_samples("fashion_mnist")
    x, y = samples.images[: args.n], samples.labels[: args.n]
    rows = [{"attack": "clean", "eps": 0.0, "accuracy": accuracy(model, x, y), "grad_evals_per_image": 0}]
    for eps in (8 / 255, 0.1):
        for name, attack in [("FGSM", FGSM(model, eps=eps)), ("PGD-20", PGD(model, eps=eps))]:
            result = attack(x, y)
            rows.append({"attack": name, "eps": eps, "accuracy": accuracy(model, result.adv, y),
                         "grad_evals_per_image": result.grad_evals})
        for hvp in ("finite_difference", "exact"):
            for rule in STEP_RULES:
                result = SOAE(model, eps=eps, hvp=hvp, step_rule=rule, steps=args.steps, keep_images=False)(x, y)
                rows.append({"attack": f"SOAE {hvp} {rule}", "eps": eps, "accuracy": accuracy(model, result.adv, y),
                             "grad_evals_per_image": result.grad_evals})
    path = write_result(f"soae_step_rule_{args.model}", {"model": args.model, "n": len(x), "steps": args.steps,
                                                          "rows": rows})
    print(f"| attack (N = {args.steps} for SOAE) | ε | accuracy | gradient evals / image |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['attack']} | {row['eps']:.4f} | {100 * row['accuracy']:.1f}% | {row['grad_evals_per_image']:.1f} |")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
