"""Training CLI: ``python -m soae_core.train --model fmnist-cnn-pgd --method pgd --epochs 6``.

Methods std, pgd, trades, soat; checkpoints, ``--resume`` and the model card are described in
:mod:`soae_core.experiments.training`, which does the work. The same command runs as K ranks with
``torchrun --standalone --nproc-per-node K -m soae_core.train ...`` (DistributedDataParallel;
``--batch-size`` is the global batch). Defaults are those of its
:class:`TrainConfig` and :class:`ObjectiveConfig`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from soae_core.device import add_device_argument
from soae_core.experiments.distributed import init_distributed
from soae_core.experiments.model_card import CARD_PGD_IMAGES, CARD_SOAE_IMAGES
from soae_core.experiments.training import REPO_ROOT, TrainConfig, train_and_save
from soae_core.experiments.training_objectives import (
    METHODS,
    ObjectiveConfig,
    default_alpha,
)
from soae_core.models import get_model_info
from soae_core.validation import check_int

TRAIN, OBJECTIVE = TrainConfig(), ObjectiveConfig()


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (``python -m soae_core.train --help``)."""
    parser = argparse.ArgumentParser(prog="python -m soae_core.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=TRAIN.model, help="registry name (Fashion-MNIST models)")
    parser.add_argument("--method", choices=METHODS, default=None, help="default: the registry's method for --model")
    parser.add_argument("--epochs", type=int, default=TRAIN.epochs)
    parser.add_argument("--batch-size", type=int, default=TRAIN.batch_size)
    parser.add_argument("--lr", type=float, default=TRAIN.lr)
    parser.add_argument("--weight-decay", type=float, default=TRAIN.weight_decay)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=TRAIN.optimizer)
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default=TRAIN.lr_schedule)
    parser.add_argument("--seed", type=int, default=TRAIN.seed)
    parser.add_argument("--eps", type=float, default=OBJECTIVE.eps, help="L∞ budget on [0, 1] pixels for pgd/trades/soat")
    parser.add_argument("--alpha", type=float, default=None,
                        help="PGD/TRADES step; default 2/255 · eps/(8/255) (the paper's 2/255 at eps 8/255)")
    parser.add_argument("--attack-steps", type=int, default=OBJECTIVE.attack_steps,
                        help="PGD/TRADES inner steps (paper: 7)")
    parser.add_argument("--trades-beta", type=float, default=OBJECTIVE.trades_beta)
    parser.add_argument("--soae-steps", type=int, default=OBJECTIVE.soae_steps)
    parser.add_argument("--soae-hvp", choices=("exact", "finite_difference"), default=OBJECTIVE.soae_hvp)
    parser.add_argument("--soae-max-krylov", type=int, default=OBJECTIVE.soae_max_krylov)
    parser.add_argument("--soae-tau", type=float, default=OBJECTIVE.soae_tau)
    parser.add_argument("--soae-step-rule", choices=("sign", "linf", "raw"), default=OBJECTIVE.soae_step_rule)
    parser.add_argument("--soae-alpha", type=float, default=OBJECTIVE.soae_alpha,
                        help="SOAT: total SOAE step α, each of the --soae-steps moves α/N (default 2.5·eps); "
                             "PGD-AT's budget is --soae-steps 7 --soae-alpha 0.175 (7 × 0.025 at eps 0.1)")
    parser.add_argument("--train-subset", type=int, default=TRAIN.train_subset, help="train on the first N images only")
    parser.add_argument("--test-subset", type=int, default=None, help="clean accuracy on the first N test images only")
    parser.add_argument("--eval-pgd-n", type=int, default=CARD_PGD_IMAGES,
                        help="test images attacked with PGD-20 for the card")
    parser.add_argument("--eval-soae-n", type=int, default=CARD_SOAE_IMAGES,
                        help="test images attacked with SOAE for the card")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "assets" / "models")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default: runs/<model>/")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on the shared 2-core machine a standard epoch took "
                             "13 s with 1 thread and 185 s with 2, the threads waiting on each other)")
    parser.add_argument("--no-progress", action="store_true")
    add_device_argument(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed arguments (the method defaults to the registry's)."""
    method = args.method or get_model_info(args.model).method
    alpha = args.alpha if args.alpha is not None else default_alpha(args.eps)
    objective = ObjectiveConfig(method=method, eps=args.eps, alpha=alpha, attack_steps=args.attack_steps,
                                trades_beta=args.trades_beta, soae_steps=args.soae_steps, soae_hvp=args.soae_hvp,
                                soae_max_krylov=args.soae_max_krylov, soae_tau=args.soae_tau,
                                soae_step_rule=args.soae_step_rule, soae_alpha=args.soae_alpha)
    return TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, optimizer=args.optimizer, lr_schedule=args.lr_schedule,
                       seed=args.seed, train_subset=args.train_subset, objective=objective)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with a one-line message for bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        torch.set_num_threads(check_int("threads", args.threads))
        cfg = config_from_args(args)
        ctx = init_distributed(args.device)
        launcher = f"torchrun --nproc-per-node {ctx.world_size}" if ctx.is_distributed else "python"
        command = f"{launcher} -m soae_core.train " + shlex.join(sys.argv[1:] if argv is None else argv)
        card = train_and_save(cfg, args.checkpoint_dir or REPO_ROOT / "runs" / args.model, args.out_dir, command,
                              resume=args.resume, progress=not args.no_progress, test_subset=args.test_subset,
                              eval_pgd_n=args.eval_pgd_n, eval_soae_n=args.eval_soae_n, ctx=ctx)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if card is None:  # a rank other than 0: rank 0 writes the weights and the card
        return 0
    print(f"wrote {args.out_dir / cfg.model}.safetensors and {cfg.model}.json: clean test accuracy "
          f"{card['clean_accuracy']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
