"""Model cards CLI: ``python -m soae_core.model_card --model fmnist-cnn-pgd`` re-evaluates a bundled
checkpoint and updates the evaluation fields of its card (e.g. after the SOAE engine changed),
keeping the training record. ``--describe-only`` rewrites only the card's ``inner_attack`` sentence
from its recorded hyper-parameters (no evaluation), so that the card says what training actually did.
The work is :mod:`soae_core.experiments.model_card`'s.
"""

from __future__ import annotations

import argparse
import json
import sys

from soae_core.experiments.model_card import CARD_PGD_IMAGES, CARD_SOAE_IMAGES, card_with_inner_attack, update_card
from soae_core.models import bundled_models_dir, load_model


def main(argv: list[str] | None = None) -> int:
    """Re-evaluate a bundled checkpoint and rewrite the evaluation fields of its card."""
    parser = argparse.ArgumentParser(prog="python -m soae_core.model_card", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--test-subset", type=int, default=None)
    parser.add_argument("--eval-pgd-n", type=int, default=CARD_PGD_IMAGES)
    parser.add_argument("--eval-soae-n", type=int, default=CARD_SOAE_IMAGES)
    parser.add_argument("--describe-only", action="store_true",
                        help="only rewrite the inner_attack sentence from the card's hyperparameters")
    args = parser.parse_args(argv)
    if args.describe_only:
        path = bundled_models_dir() / f"{args.model}.json"
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
    try:
        model = load_model(args.model)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = bundled_models_dir() / f"{args.model}.json"
    card = update_card(model, path, args.model, test_subset=args.test_subset, pgd_n=args.eval_pgd_n,
                       soae_n=args.eval_soae_n)
    print(f"updated {path}: clean {card['clean_accuracy']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
