"""The "A fairer SOAT" table of REPRODUCTION.md (issue 12, item 6), computed from the evaluation runs
of ``bench/fair_soat.sh`` kept under ``bench/results/reproduction/fair-soat/``:

    .venv/bin/python bench/fair_soat_table.py

Prints one row per trained model and ε (clean and robust accuracy under every attack evaluated, on
the same first 500 test images) and, for each ε, whether the 7-step SOAT closes the gap to PGD-AT
under AutoAttack — a sentence computed here, not typed.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "results" / "reproduction" / "fair-soat"
ATTACKS = ["FGSM", "PGD", "AutoAttack", "ASOD", "SOAE", "SOAE-g"]
# (row label, model name in the runs, the evaluation folders that hold its cells)
ROWS = [("PGD-AT (7 PGD steps)", "fmnist-cnn-pgd", ["eval-pgd-soat1", "eval-pgd-soat1-asod"]),
        ("SOAT, 1 SOAE step", "fmnist-cnn-soat", ["eval-pgd-soat1", "eval-pgd-soat1-asod"]),
        ("SOAT, 7 SOAE steps", "fmnist-cnn-soat", ["eval-soat7"])]


def cells(model: str, folders: list[str]) -> tuple[float | None, dict[tuple[float, str], float]]:
    """(clean accuracy, {(ε, attack): robust accuracy}) of ``model`` over the folders that exist."""
    clean, found = None, {}
    for folder in folders:
        path = HERE / folder / "results.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        clean = results["models"][model]["clean_accuracy"]
        for cell in results["attacks"]:
            if cell["model"] == model:
                found[(round(cell["eps"], 6), cell["attack"])] = cell["robust_accuracy"]
    return clean, found


def main() -> None:
    table = {label: cells(model, folders) for label, model, folders in ROWS}
    epsilons = sorted({eps for _, found in table.values() for eps, _ in found})
    print("| model (8 000 images × 2 epochs, seed 0) | ε | Clean | " + " | ".join(ATTACKS) + " |")
    print("|:--|:--|--:|" + "--:|" * len(ATTACKS))
    for eps in epsilons:
        for label, (clean, found) in table.items():
            values = [f"{100 * found[(eps, a)]:.1f}%" if (eps, a) in found else "–" for a in ATTACKS]
            eps_text = "8/255" if abs(eps - 8 / 255) < 1e-6 else f"{eps:g}"
            print(f"| {label} | {eps_text} | {100 * clean:.1f}% | " + " | ".join(values) + " |")
    print()
    (pgd_clean, pgd_at), (soat1_clean, soat1), (soat7_clean, soat7) = (table[label] for label, _, _ in ROWS)
    shared = sorted(set(pgd_at) & set(soat1) & set(soat7))
    below_1step = [cell for cell in shared if soat7[cell] < soat1[cell]]
    gaps_1step = [100 * (soat1[cell] - soat7[cell]) for cell in shared]
    below_pgd = [cell for cell in shared if max(soat1[cell], soat7[cell]) < pgd_at[cell]]
    print(f"In {len(below_1step)} of {len(shared)} cells (attack × ε) the 7-step SOAT is less robust than the "
          f"1-step SOAT (differences {min(gaps_1step):+.1f} to {max(gaps_1step):+.1f} points in the 1-step "
          f"SOAT's favour); in {len(below_pgd)} of {len(shared)} both SOATs are less robust than PGD-AT. "
          f"Clean accuracy: PGD-AT {100 * pgd_clean:.1f}%, 1-step SOAT {100 * soat1_clean:.1f}%, "
          f"7-step SOAT {100 * soat7_clean:.1f}%.")
    for eps in epsilons:
        a, b, c = (found.get((eps, "AutoAttack")) for found in (pgd_at, soat7, soat1))
        if a is None or b is None or c is None:
            continue
        eps_text = "8/255" if abs(eps - 8 / 255) < 1e-6 else f"{eps:g}"
        verdict = "closes" if b >= a else "does not close"
        print(f"At ε = {eps_text} under AutoAttack the 7-step SOAT {verdict} the gap to PGD-AT: "
              f"{100 * b:.1f}% vs {100 * a:.1f}% ({100 * (b - a):+.1f} points; the 1-step SOAT "
              f"{100 * (c - a):+.1f}).")


if __name__ == "__main__":
    main()
