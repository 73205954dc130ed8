"""Why SOAE's overhead at batch 1 is larger inside the attack than in isolation (issue 15).

On the bundled Fashion-MNIST CNN, one torch thread, SOAE's defaults, 16 bundled images one by one,
in one process and one run:

- the gradient of a finite-difference product (``hvp._gradient_at_new``), timed inside the attack
  (between solver steps) and back to back in a tight loop on a shifted image;
- the host GMRES loop's own work (``krylov._solve_host`` minus its operator calls) per image,
  inside the attack, against what the same solves and steps cost back to back on a diagonal
  operator whose product costs ~1 µs (per step and per solve from solves of 10 and 30 steps).

Run: ``.venv/bin/python bench/measure_cold_steps.py [--dtype float64] [--rounds 4]``; writes
bench/results/cold_steps_<dtype>.json. Compare the two columns of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine, write_result

from soae_core import hvp, krylov
from soae_core.attacks import SOAE
from soae_core.data import load_samples
from soae_core.models import load_model


class _Timer:
    """Wraps a function of a module or class, adding its wall time and call count to totals."""

    def __init__(self, owner, name: str) -> None:
        self.owner, self.name, self.original = owner, name, getattr(owner, name)
        self.seconds, self.calls = 0.0, 0

    def __enter__(self) -> "_Timer":
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.owner, self.name, self.original)


def inside_attack(model, images, labels) -> dict:
    """µs per product gradient, and per image: the host loop's own work, its solves and steps."""
    with _Timer(hvp, "_gradient_at_new") as gradient, _Timer(krylov, "_solve_host") as solve, \
            _Timer(krylov._Operator, "whole") as operator:
        for image, label in zip(images, labels, strict=True):
            SOAE(model)(image[None], label[None])
    return {"gradient_us": gradient.seconds / gradient.calls * 1e6,
            "loop_us_per_image": (solve.seconds - operator.seconds) / len(images) * 1e6,
            "solves_per_image": solve.calls / len(images),
            "steps_per_image": (operator.calls - solve.calls) / len(images)}  # one product per solve for r0


def tight_gradient(model, image, label, calls: int = 200) -> float:
    """µs per product gradient, back to back, on an image shifted as a product shifts it."""
    shift = 1e-6 * torch.randn_like(image)
    start = time.perf_counter()
    for _ in range(calls):
        hvp._gradient_at_new(model, image + shift, label, False, hvp.cross_entropy_loss)
    return (time.perf_counter() - start) / calls * 1e6


def warm_loop_us(dtype: torch.dtype, n: int) -> tuple[float, float]:
    """(µs per solve, µs per step) of the host loop on a ~free diagonal operator, back to back."""
    diagonal = torch.logspace(0, -8, n, dtype=dtype)
    b = torch.randn(1, n, dtype=dtype, generator=torch.Generator().manual_seed(0))
    times = {}
    for steps in (10, 30):
        krylov.gmres(lambda v, index: v * diagonal, b, tau=1e-30, max_iter=steps)  # warm-up
        start = time.perf_counter()
        for _ in range(100):
            krylov.gmres(lambda v, index: v * diagonal, b, tau=1e-30, max_iter=steps)
        times[steps] = (time.perf_counter() - start) / 100
    per_step = (times[30] - times[10]) / 20
    return (times[10] - 10 * per_step) * 1e6, per_step * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    model = load_model("fmnist-cnn-std", dtype=dtype)
    samples = load_samples("fashion_mnist")
    images, labels = samples.images[:16].to(dtype), samples.labels[:16]
    inside_attack(model, images, labels)  # warm-up
    rounds = []
    for _ in range(args.rounds):
        inside = inside_attack(model, images, labels)
        per_solve, per_step = warm_loop_us(dtype, images[0].numel())
        rounds.append({"gradient_in_attack_us": inside["gradient_us"],
                       "gradient_back_to_back_us": tight_gradient(model, images[:1], labels[:1]),
                       "loop_in_attack_us_per_image": inside["loop_us_per_image"],
                       "loop_back_to_back_us_per_image": inside["solves_per_image"] * per_solve
                       + inside["steps_per_image"] * per_step,
                       "solves_per_image": inside["solves_per_image"], "steps_per_image": inside["steps_per_image"]})
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    result = {"dtype": args.dtype, "rounds": rounds, "median": median,
              "gradient_slowdown_in_attack": median["gradient_in_attack_us"] / median["gradient_back_to_back_us"],
              "loop_slowdown_in_attack": median["loop_in_attack_us_per_image"] / median["loop_back_to_back_us_per_image"]}
    path = write_result(f"cold_steps_{args.dtype}", result)
    print(f"machine: {machine()}")
    print(f"product gradient: {median['gradient_in_attack_us']:.0f} µs inside the attack, "
          f"{median['gradient_back_to_back_us']:.0f} µs back to back ({result['gradient_slowdown_in_attack']:.3f}×)")
    print(f"host loop, own work per image ({median['solves_per_image']:g} solves, {median['steps_per_image']:g} steps): "
          f"{median['loop_in_attack_us_per_image'] / 1e3:.2f} ms inside the attack, "
          f"{median['loop_back_to_back_us_per_image'] / 1e3:.2f} ms back to back ({result['loop_slowdown_in_attack']:.1f}×)")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
