"""AutoAttack benchmark (issue 4): AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), L∞,
ε = 0.1, on the first 100 Fashion-MNIST test images, standard small CNN (fmnist-cnn-std).

Target: ≤ 15 s on the project machine (torchattacks alone took ~10 s there). Times our
wrapper (counting model, detached parameters, forked RNG) and bare torchattacks on the same
images, so the wrapper's overhead is visible.

Run: `python bench/bench_autoattack.py` (or `./lab bench`). Writes bench/results/autoattack.json.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks
from common import machine, write_result

from soae_core.attacks import AutoAttack
from soae_core.data import load_fashion_mnist
from soae_core.device import add_device_argument, resolve_device
from soae_core.metrics import accuracy
from soae_core.models import load_model

EPS = 0.1
N_IMAGES = 100
TARGET_S = 15.0


def _timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    adv = fn()
    return time.perf_counter() - start, adv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (the median is reported)")
    parser.add_argument("--name", default="autoattack", help="result file name under bench/results/")
    add_device_argument(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model("fmnist-cnn-std", device=device)
    test = load_fashion_mnist("test")
    x, y = test.images[:N_IMAGES].to(device), test.labels[:N_IMAGES].to(device)
    clean = accuracy(model, x, y)

    ours, bare, result = [], [], None
    for _ in range(args.repeats):
        seconds, result = _timed(lambda: AutoAttack(model, eps=EPS, seed=0)(x, y))
        ours.append(seconds)
        reference = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
        seconds, _ = _timed(lambda reference=reference: reference(x, y))
        bare.append(seconds)
    robust = accuracy(model, result.adv, y)
    payload = {
        "setting": f"AutoAttack standard, Linf, eps={EPS}, first {N_IMAGES} Fashion-MNIST test images, fmnist-cnn-std",
        "seconds_ours": sorted(ours), "median_seconds_ours": sorted(ours)[args.repeats // 2],
        "seconds_torchattacks": sorted(bare), "median_seconds_torchattacks": sorted(bare)[args.repeats // 2],
        "target_seconds": TARGET_S, "clean_accuracy": clean, "robust_accuracy": robust,
        "grad_evals_per_image": result.grad_evals,
        "forward_passes_per_image": result.trace.forward_images / N_IMAGES,
        "device": str(device),
    }
    path = write_result(args.name, payload)
    print(f"{machine()}\nAutoAttack ε={EPS} on {N_IMAGES} images: ours median {payload['median_seconds_ours']:.1f} s "
          f"(torchattacks alone {payload['median_seconds_torchattacks']:.1f} s, target ≤ {TARGET_S:.0f} s); "
          f"clean {clean:.0%} → robust {robust:.0%}; {result.grad_evals} gradients and "
          f"{payload['forward_passes_per_image']:.0f} forward passes per image\nwrote {path}")


if __name__ == "__main__":
    main()
