"""Write the bundled sample set: ``python -m soae_core.make_samples`` → assets/samples/fashion_mnist.npz
(:func:`soae_core.experiments.samples.write_fashion_mnist_samples`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soae_core.data import samples_dir
from soae_core.experiments.samples import write_fashion_mnist_samples


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and write the sample set."""
    parser = argparse.ArgumentParser(prog="python -m soae_core.make_samples", description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--out", type=Path, default=samples_dir() / "fashion_mnist.npz")
    args = parser.parse_args(argv)
    print(f"wrote {write_fashion_mnist_samples(args.out, args.per_class)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
