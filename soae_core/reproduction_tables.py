"""Reproduction tables CLI: our evaluation runs set beside the paper's published numbers.

    python -m soae_core.reproduction_tables runs/reproduction runs/reproduction-smooth \\
        --exact runs/reproduction-soae-exact --asod runs/reproduction-asod-sigma0.1

``--exact`` is a run of SOAE with exact Hessian-vector products, ``--asod`` a run of ASOD with
another noise level, ``--no-curvature`` a run of SOAE-g (SOAE without curvature); all are optional
and add a column where they cover a model and ε. The tables, and the counts REPRODUCTION.md cites,
are :mod:`soae_core.experiments.reproduction_tables`'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soae_core.experiments.reproduction_tables import load_results, markdown, merge_results


def main(argv: list[str] | None = None) -> int:
    """Entry point: print (or write with --out) the comparison tables."""
    parser = argparse.ArgumentParser(prog="python -m soae_core.reproduction_tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("main", nargs="+", help="results.json (or its folder) of the main evaluation run(s), "
                                                "merged in order (e.g. the bundled models, then another model)")
    parser.add_argument("--exact", default=None, help="a run of SOAE with --soae-hvp exact")
    parser.add_argument("--asod", default=None, help="a run of ASOD with another --asod-sigma")
    parser.add_argument("--no-curvature", default=None, help="a run of SOAE-g (--attacks SOAE-g)")
    parser.add_argument("--quadratic", default=None,
                        help="a run of SOAE with --soae-direction quadratic --soae-hvp exact (eq. 4 literally)")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of printing")
    args = parser.parse_args(argv)
    try:
        text = markdown(merge_results([load_results(path) for path in args.main]), args.exact and load_results(args.exact),
                        args.asod and load_results(args.asod), args.no_curvature and load_results(args.no_curvature),
                        args.quadratic and load_results(args.quadratic))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
