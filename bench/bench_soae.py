"""SOAE engine benchmark (issue: engine).

Targets, on the small Fashion-MNIST CNN with 28×28 inputs:
1. batch 128: wall time ÷ (gradient evaluations × time of one batched gradient) ≤ 1.10 with the
   paper's finite-difference products — the Krylov bookkeeping must vanish next to the network;
2. per-image time at batch 128 at least 10× lower than attacking images one at a time.

Run: `python bench/bench_soae.py` (or `./lab bench`). Writes bench/results/soae.json.
"""

from __future__ import annotations

import time

import torch
from common import machine, median_seconds, write_result

from soae_core.attacks import SOAE
from soae_core.device import add_device_argument, resolve_device
from soae_core.hvp import hvp_exact, input_gradient


def _model_and_images(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    from soae_core.data import load_samples
    from soae_core.models import load_model
    from soae_core.models.registry import build_model

    samples = load_samples("fashion_mnist")
    images = samples.images.repeat(2, 1, 1, 1)[:128].to(device)
    labels = samples.labels.repeat(2)[:128].to(device)
    try:
        return load_model("fmnist-cnn-std", device=device), images, labels, "fmnist-cnn-std (bundled weights)"
    except ValueError:
        model = build_model("fmnist-cnn-std").to(device).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model, images, labels, "fmnist-cnn-std architecture, random weights (checkpoint missing)"


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="SOAE engine benchmark")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on the shared 2-core machine 2 threads were slower)")
    add_device_argument(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, images, labels, model_name = _model_and_images(device)
    results: dict = {"model": model_name, "threads": args.threads, "device": str(device)}
    gradient_s = median_seconds(lambda: input_gradient(model, images, labels), repeats=20)
    hvp_s = median_seconds(lambda: hvp_exact(model, images, labels, torch.randn_like(images)), repeats=10)
    results["one_gradient_batch128_ms"] = gradient_s * 1e3
    results["one_exact_hvp_batch128_ms"] = hvp_s * 1e3

    for mode in ("finite_difference", "exact"):
        attack = SOAE(model, eps=8 / 255, hvp=mode, steps=4, keep_images=False)
        attack(images[:8], labels[:8])  # warm-up
        start = time.perf_counter()
        result = attack(images, labels)
        wall = time.perf_counter() - start
        if mode == "finite_difference":
            network_s = result.grad_evals * gradient_s
        else:  # one gradient per iteration + exact products, each at its measured cost
            products = result.grad_evals - len(result.trace.iterations)
            network_s = len(result.trace.iterations) * gradient_s + products * hvp_s
        m = [int(it.krylov.iterations.float().mean()) for it in result.trace.iterations]
        results[mode] = {"wall_s": wall, "grad_evals": result.grad_evals, "mean_m_per_iteration": m,
                         "network_time_s": network_s, "overhead_ratio": wall / network_s}

        single = SOAE(model, eps=8 / 255, hvp=mode, steps=4, keep_images=False)
        n_single = 16
        start = time.perf_counter()
        for i in range(n_single):
            single(images[i:i + 1], labels[i:i + 1])
        per_image_single = (time.perf_counter() - start) / n_single
        results[mode]["per_image_batch128_ms"] = wall / images.shape[0] * 1e3
        results[mode]["per_image_one_at_a_time_ms"] = per_image_single * 1e3
        results[mode]["batching_speedup"] = per_image_single / (wall / images.shape[0])

    path = write_result("soae", results)
    print(f"machine: {machine()}")
    print(f"model: {model_name}; one batched gradient (128): {gradient_s * 1e3:.1f} ms; "
          f"one exact HVP (128): {hvp_s * 1e3:.1f} ms")
    for mode in ("finite_difference", "exact"):
        r = results[mode]
        print(f"{mode:18s} wall {r['wall_s']:.2f} s, grad evals {r['grad_evals']}, m {r['mean_m_per_iteration']}, "
              f"overhead ratio {r['overhead_ratio']:.3f} (target ≤ 1.10), per image {r['per_image_batch128_ms']:.2f} ms "
              f"vs {r['per_image_one_at_a_time_ms']:.1f} ms alone → {r['batching_speedup']:.1f}× (target ≥ 10×)")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
