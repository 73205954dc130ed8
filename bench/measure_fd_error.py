"""How accurate is the paper's finite-difference Hessian-vector product? A measurement over many images.

For each model and each of the first n Fashion-MNIST test images: the relative error
‖Hv_fd − Hv‖ / ‖Hv‖ of forward and central differences (float32 and float64) against the exact
float64 product (double backprop), with v the input gradient (the paper's first product), for
η = 1e-1 … 1e-7 — once on the images as they are, once after "jitter": uniform noise of ±1e-3
added and clamped to [0, 1], which breaks the exact ties of Fashion-MNIST's zero backgrounds in
the max-pool windows. Per-image sweeps come from :func:`soae_core.analysis.krylov_inspector.fd_accuracy_sweep`
(the Krylov Inspector's), this script only loops and summarises (median and 90th percentile).

Run: `python bench/measure_fd_error.py [--models ...] [--n 100]`.
Writes bench/results/fd_error.json and prints a Markdown table (median relative error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402
from soae_core.data import load_fashion_mnist  # noqa: E402
from soae_core.analysis.krylov_inspector import fd_accuracy_sweep  # noqa: E402
from soae_core.defaults import decades  # noqa: E402
from soae_core.models import load_model  # noqa: E402

ETAS = decades(-1, -7)
JITTER = 1e-3


def sweep_images(name: str, images: torch.Tensor, labels: torch.Tensor, jitter: float) -> pd.DataFrame:
    """fd_accuracy_sweep on every image of ``images`` (N, 1, 28, 28), with optional uniform jitter."""
    model32, model64 = load_model(name, dtype=torch.float32), load_model(name, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    frames = []
    for index in tqdm(range(images.shape[0]), desc=f"{name} jitter={jitter:g}", leave=False, file=sys.stderr):
        image = images[index:index + 1].double()
        if jitter:
            noise = (torch.rand(image.shape, generator=generator, dtype=torch.float64) * 2 - 1) * jitter
            image = (image + noise).clamp(0, 1)
        frame = fd_accuracy_sweep(model32, model64, image, int(labels[index]), etas=ETAS)
        frames.append(frame.assign(model=name, jitter=jitter, image=index))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fmnist-cnn-std", "fmnist-cnn-pgd", "fmnist-cnn-soat",
                                                         "fmnist-cnn-smooth-std"])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test = load_fashion_mnist("test")
    images, labels = test.images[:args.n], test.labels[:args.n]
    rows = pd.concat([sweep_images(name, images, labels, jitter)
                      for name in args.models for jitter in (0.0, JITTER)], ignore_index=True)
    summary = (rows.groupby(["model", "jitter", "dtype", "scheme", "eta"])["relative_error"]
               .agg(median="median", p90=lambda s: s.quantile(0.9), nonfinite=lambda s: int(s.isna().sum()))
               .reset_index())
    path = write_result("fd_error", {"command": " ".join(["python bench/measure_fd_error.py", *sys.argv[1:]]),
                                     "n": args.n, "etas": list(ETAS), "jitter": JITTER,
                                     "summary": summary.to_dict("records")})
    forward = summary[summary["scheme"] == "forward"].copy()
    forward["images"] = forward["jitter"].map({0.0: "as is", JITTER: f"jitter ±{JITTER:g}"})
    table = forward.pivot_table(index=["model", "images", "dtype"], columns="eta", values="median", sort=False)
    table = table[sorted(table.columns, reverse=True)]
    print(f"Median relative error of the forward difference, first {args.n} test images (v = ∇L):\n")
    print(table.map(lambda e: f"{e:.1e}").reset_index().to_markdown(index=False, disable_numparse=True))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
