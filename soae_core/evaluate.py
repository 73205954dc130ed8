"""Evaluation CLI: models × attacks × ε on n test images → Markdown, JSON and plotly HTML.

    python -m soae_core.evaluate --models fmnist-cnn-std fmnist-cnn-pgd --eps 8/255 0.1 --n-images 1000 \
        --studies eta tau iterations --out runs/reproduction
    torchrun --standalone --nproc-per-node 2 -m soae_core.evaluate ... (the same, as 2 ranks; or --jobs 2)

What it measures is :mod:`soae_core.experiments.evaluation`'s (its docstring follows in ``--help``).
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from soae_core.attacks import ATTACKS
from soae_core.device import add_device_argument
from soae_core.experiments import evaluation
from soae_core.experiments.distributed import (
    init_distributed,
    launch_local,
    launched_by_torchrun,
    shutdown,
)
from soae_core.experiments.evaluation import (
    DATA_SOURCES,
    STUDIES,
    EvalConfig,
    make_attack,
    run_evaluation,
)
from soae_core.experiments.evaluation_report import write_reports
from soae_core.validation import check_int

DEFAULTS = EvalConfig()


def parse_fraction(text: str) -> float:
    """'8/255' or '0.1' → float; ValueError otherwise."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number such as 0.1 or 8/255, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (``python -m soae_core.evaluate --help``); defaults are :class:`EvalConfig`'s."""
    description = __doc__ + "\n" + evaluation.__doc__.split("\n\n", 1)[1]  # its main grid and studies
    parser = argparse.ArgumentParser(prog="python -m soae_core.evaluate", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULTS.models, help="registry model names")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), help=f"among {', '.join(ATTACKS)}")
    parser.add_argument("--eps", nargs="+", type=parse_fraction, default=DEFAULTS.eps, help="L∞ budgets, e.g. 8/255 0.1")
    parser.add_argument("--n-images", "--n", dest="n", type=int, default=DEFAULTS.n,
                        help="number of test images (the first n); under torchrun write --n-images, since "
                             "torchrun reads --n as an abbreviation of its own options")
    parser.add_argument("--data", choices=DATA_SOURCES, default=DEFAULTS.data, help="test split or bundled samples")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--weights", nargs="*", default=[], metavar="NAME=PATH", help="override a model's weights")
    parser.add_argument("--soae-hvp", default=None, help="finite_difference (paper), central_difference or exact")
    parser.add_argument("--soae-eta", type=float, default=None)
    parser.add_argument("--soae-tau", type=float, default=None)
    parser.add_argument("--soae-steps", type=int, default=None)
    parser.add_argument("--soae-max-krylov", type=int, default=None)
    parser.add_argument("--soae-step-rule", default=None, help="sign, linf or raw")
    parser.add_argument("--soae-direction", default=None,
                        help="newton (GMRES δ̃, default), gradient (δ̃ := g, as SOAE-g) or quadratic (eq. 4: "
                             "maximise the quadratic model over the step's box; use with --soae-hvp exact)")
    parser.add_argument("--asod-sigma", type=parse_fraction, default=DEFAULTS.asod_sigma,
                        help="0.7 (MNIST), 100/255 (CIFAR-10)")
    parser.add_argument("--studies", nargs="*", default=DEFAULTS.studies, choices=STUDIES)
    parser.add_argument("--study-n", type=int, default=DEFAULTS.study_n)
    parser.add_argument("--study-models", nargs="+", default=DEFAULTS.study_models)
    parser.add_argument("--etas", nargs="+", type=float, default=DEFAULTS.etas)
    parser.add_argument("--taus", nargs="+", type=float, default=DEFAULTS.taus)
    parser.add_argument("--study-max-krylov", type=int, default=DEFAULTS.study_max_krylov)
    parser.add_argument("--iteration-steps", type=int, default=DEFAULTS.iteration_steps)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--out", type=Path, default=Path("runs/evaluation"), help="output folder")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on a crowded machine)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="ranks on this machine: --jobs N runs this same command as N torchrun ranks "
                             "(torchrun --standalone --nproc-per-node N -m soae_core.evaluate ...)")
    add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """An :class:`EvalConfig` from parsed arguments (ValueError for a malformed NAME=PATH)."""
    weights = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--weights entries must look like NAME=PATH, got {item!r}")
        weights[name] = path
    soae = {key: value for key, value in {
        "hvp": args.soae_hvp, "eta": args.soae_eta, "tau": args.soae_tau, "steps": args.soae_steps,
        "max_krylov": args.soae_max_krylov, "step_rule": args.soae_step_rule,
        "direction": args.soae_direction}.items() if value is not None}
    return EvalConfig(models=args.models, attacks=args.attacks, eps=args.eps, n=args.n, data=args.data,
                      batch_size=args.batch_size, weights=weights, soae=soae, asod_sigma=args.asod_sigma,
                      studies=args.studies, study_n=args.study_n, study_models=args.study_models,
                      etas=args.etas, taus=args.taus, study_max_krylov=args.study_max_krylov,
                      iteration_steps=args.iteration_steps, seed=args.seed, device=args.device)


def rank_arguments(argv: list[str]) -> list[str]:
    """``argv`` for the ranks of ``--jobs N``: without ``--jobs``, with ``--n`` spelt ``--n-images``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--jobs":
            skip = True
        elif not item.startswith("--jobs="):
            out.append("--n-images" + item[3:] if item == "--n" or item.startswith("--n=") else item)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run (one process, or this rank of a torchrun job), and on rank 0 write
    report.md, results.json and figures.html into --out. ``--jobs N`` relaunches the command as N ranks."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args).validate()
        jobs = check_int("jobs", args.jobs)
        if jobs > 1 and launched_by_torchrun():
            raise ValueError("--jobs cannot be combined with torchrun: torchrun's --nproc-per-node sets the ranks")
        if args.threads is not None:
            torch.set_num_threads(check_int("threads", args.threads))
        # Bad SOAE settings should fail now, not after an hour of baselines: build one on a stand-in.
        make_attack("SOAE", nn.Linear(1, 1), 0.1, config)
        if jobs > 1:
            return launch_local("soae_core.evaluate", rank_arguments(argv), jobs)
        ctx = init_distributed(config.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        results = run_evaluation(config, quiet=args.quiet, ctx=ctx)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown(ctx)
    if results is not None:  # rank 0 writes; the other ranks are done
        paths = write_reports(results, args.out)
        print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
