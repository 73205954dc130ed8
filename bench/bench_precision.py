"""float32 or float64 for the app's attacks: what each costs and whether a batch gives every image
what it gets alone (the reason the app's default precision is float64; issue 17).

On the bundled standard Fashion-MNIST CNN, one torch thread, SOAE with the app's default settings
(and the "fast classroom" preset's exact products), for each dtype:

- alone: the first ``--images`` bundled images one by one — median seconds and gradient
  evaluations per image, and how many images the attack fooled;
- batched: the same images as one batched call (``run_attack_batch``) — seconds per image, and
  the number of images whose batched result differs from its result alone
  (``attack_lab.batch_differences``, the check the tests make). Only a dtype where that number
  is 0 may be batched in the app (``attack_lab.batchable``);
- one input gradient of ResNet-18 at 224 × 224 (untrained weights: the cost does not depend on
  them), batch 1 — the price of float64 on a large model.

Run: ``.venv/bin/python bench/bench_precision.py [--images 30]``; writes
bench/results/precision.json. Compare the ratios within one run (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision
from common import median_seconds, write_result

from soae_core.analysis import attack_lab
from soae_core.analysis.attack_lab import batch_differences, run_attack, run_attack_batch
from soae_core.analysis.settings import DEFAULT_SETTINGS, PRESETS
from soae_core.data import load_samples
from soae_core.models import load_model


def attack_row(dtype: torch.dtype, preset: str, n: int) -> dict:
    model = load_model("fmnist-cnn-std", dtype=dtype)
    samples = load_samples("fashion_mnist")
    images = [samples.images[i:i + 1].to(dtype) for i in range(n)]
    labels = [int(samples.labels[i]) for i in range(n)]
    kwargs = PRESETS[preset].attack_kwargs("SOAE", "fashion_mnist")
    run_attack(model, images[0], labels[0], "SOAE", kwargs)  # warm-up
    alone, seconds = [], []
    for image, label in zip(images, labels, strict=True):
        start = time.perf_counter()
        alone.append(run_attack(model, image, label, "SOAE", kwargs))
        seconds.append(time.perf_counter() - start)
    checked, attack_lab.batchable = attack_lab.batchable, lambda *_: True  # measure float32 batches too
    try:
        start = time.perf_counter()
        batched = run_attack_batch(model, images, labels, "SOAE", kwargs)
        batch_s = time.perf_counter() - start
    finally:
        attack_lab.batchable = checked
    evals = [outcome.grad_evals for outcome, _ in alone]
    return {"dtype": str(dtype).removeprefix("torch."), "preset": preset, "images": n,
            "alone_median_s": statistics.median(seconds), "alone_mean_s": statistics.fmean(seconds),
            "grad_evals_median": statistics.median(evals), "grad_evals_min": min(evals), "grad_evals_max": max(evals),
            "fooled_alone": sum(outcome.success for outcome, _ in alone),
            "batched_per_image_s": batch_s / n,
            "batch_members_differing": sum(bool(batch_differences(b, a)) for b, a in zip(batched, alone, strict=True))}


def resnet_gradient_s(dtype: torch.dtype) -> float:
    net = torchvision.models.resnet18().eval().to(dtype).requires_grad_(False)
    x = torch.rand(1, 3, 224, 224, dtype=dtype, requires_grad=True)
    return median_seconds(lambda: torch.autograd.grad(net(x).logsumexp(1).sum(), x), repeats=4, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--output", default="precision")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = [attack_row(dtype, preset, args.images) for preset in ("paper", "fast classroom")
            for dtype in (torch.float32, torch.float64)]
    resnet = {str(dtype).removeprefix("torch."): resnet_gradient_s(dtype) for dtype in (torch.float32, torch.float64)}
    result = {"torch_threads": 1, "load_before": load_before, "load_after": os.getloadavg(),
              "default_settings": DEFAULT_SETTINGS.soae_kwargs(), "soae": rows, "resnet18_gradient_s": resnet}
    print(f"{'preset':<15} {'dtype':<8} {'alone s/img':>11} {'grad evals (min–max)':>22} {'fooled':>7} "
          f"{'batched s/img':>13} {'members differing':>18}")
    for r in rows:
        print(f"{r['preset']:<15} {r['dtype']:<8} {r['alone_median_s']:>11.3f} "
              f"{r['grad_evals_median']:>8.0f} ({r['grad_evals_min']}–{r['grad_evals_max']}){'':>4} "
              f"{r['fooled_alone']:>4}/{r['images']:<2} {r['batched_per_image_s']:>13.3f} "
              f"{r['batch_members_differing']:>12}/{r['images']}")
    print(f"ResNet-18 one gradient: float32 {resnet['float32'] * 1e3:.0f} ms, float64 {resnet['float64'] * 1e3:.0f} ms "
          f"({resnet['float64'] / resnet['float32']:.1f}×); load {load_before[0]:.1f} → {result['load_after'][0]:.1f}")
    print(f"written to {write_result(args.output, result)}")


if __name__ == "__main__":
    main()
