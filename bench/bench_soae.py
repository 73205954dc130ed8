"""SOAE engine benchmark: what SOAE costs per gradient evaluation, at batch sizes 1 to 128 (issue 15).

Target, on the bundled Fashion-MNIST CNN (28×28) with SOAE's default settings: the solver must
vanish next to the network at every batch size —

    wall ÷ (gradient evaluations × one gradient at the same batch size)
        ≤ 1.3 at batch 1 with finite differences (the Attack Lab's case), ≤ 1.1 at batch 128.

For exact products the network time is one gradient per outer iteration plus the products,
each at one measured exact product. Batch 1 attacks 8 bundled images one by one; batch B > 1
attacks the first B images of the bundled set (repeated to 128) at once. The same number of
gradient (and exact-product) evaluations at the same batch size is timed half right before and
half right after each attack, so both sides of the ratio run under the same load; the median
over rounds is reported, in wall time (the target) and in CPU time of this one-thread process
(steadier on a loaded machine).

The same run measures the engine of ``--before`` (``soae_core/krylov.py`` and ``hvp.py`` before
issue 15 — modified Gram–Schmidt — read from git history) at the targets' batch sizes, and times
the Attack Lab's SOAE on one image, cold (nothing cached), with both engines, image by image in
alternating order. It counts, for both solvers, the host synchronisations (calls that copy a
device value to the host: ``nonzero``, ``item``, ``tolist``, ``bool(t)`` …) and the torch calls
per Krylov step with a TorchFunctionMode on two solves of different lengths (the per-solve
constant cancels), and, at the targets' batch sizes, splits the time into the solver's own
bookkeeping and the rest by replaying each attack with a GMRES that only makes the same
operator calls on the same samples.

Run: `python bench/bench_soae.py` (or `./lab bench`). Writes bench/results/soae.json (``--output``
names another file, e.g. to compare with ``--before`` set to another revision).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Iterator

import torch
from common import machine, write_result
from torch.overrides import TorchFunctionMode

from soae_core import hvp, krylov
from soae_core.attacks import SOAE
from soae_core.attacks import soae as soae_module
from soae_core.device import add_device_argument, resolve_device
from soae_core.hvp import hvp_exact, input_gradient  # the network's own cost

ROOT = Path(__file__).resolve().parents[1]

BEFORE_REV = "06399ba"  # the last commit with the modified Gram–Schmidt GMRES (before issue 15)
TARGETS = {1: 1.3, 128: 1.1}  # finite differences
SYNCING = {"nonzero", "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy",
           "argwhere", "masked_select"}


def _model_and_images(device: torch.device,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    from soae_core.data import load_samples
    from soae_core.models import load_model
    from soae_core.models.registry import build_model

    samples = load_samples("fashion_mnist")
    images = samples.images.repeat(2, 1, 1, 1)[:128].to(device=device, dtype=dtype)
    labels = samples.labels.repeat(2)[:128].to(device)
    try:
        return (load_model("fmnist-cnn-std", device=device, dtype=dtype), images, labels,
                "fmnist-cnn-std (bundled weights)")
    except ValueError:
        model = build_model("fmnist-cnn-std").to(device=device, dtype=dtype).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model, images, labels, "fmnist-cnn-std architecture, random weights (checkpoint missing)"


def _batches(images: torch.Tensor, labels: torch.Tensor, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batch 1: eight images one by one; batch B > 1: the first B images at once."""
    if batch == 1:
        return [(images[i:i + 1], labels[i:i + 1]) for i in range(8)]
    return [(images[:batch], labels[:batch])]


class _Clock:
    """Wall and CPU (process) seconds of a block; on the loaded shared machine the CPU time of
    this one-thread process is the steadier of the two."""

    def __enter__(self) -> "_Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def _network_calls(result, mode: str) -> tuple[float, float]:
    """(gradient calls, exact-product calls) per image of one attack: with the shrinking active
    batch, the batch's total evaluations ÷ B."""
    trace = result.trace
    batch = trace.initial_loss.shape[0]
    evals = float(trace.grad_evals_per_sample.sum()) / batch
    if mode == "finite_difference":
        return evals, 0.0
    products = sum(float(it.krylov.products_per_sample.sum()) for it in trace.iterations) / batch
    return float(len(trace.iterations)), products


def _network_clock(model, x, y, gradients: float, products: float) -> _Clock:
    """Time ``gradients`` input gradients and ``products`` exact products at the batch of x
    (fractions by scaling: the calls are rounded up and the time scaled down)."""
    v = torch.randn_like(x)
    calls_g, calls_p = math.ceil(gradients), math.ceil(products)
    with _Clock() as clock:
        for _ in range(calls_g):
            input_gradient(model, x, y)
        for _ in range(calls_p):
            hvp_exact(model, x, y, v)
    scale = (gradients + products) / max(calls_g + calls_p, 1)
    clock.wall, clock.cpu = clock.wall * scale, clock.cpu * scale
    return clock


def measure_batch(model, images, labels, batch: int, mode: str, rounds: int) -> dict:
    """SOAE (defaults, hvp=mode) at one batch size against the same number of gradient (and
    exact-product) evaluations at that batch size, half timed right before and half right after
    each attack (so a change of load during the attack hits both sides); median over rounds."""
    batches = _batches(images, labels, batch)
    counts = [_network_calls(SOAE(model, hvp=mode)(xb, yb), mode) for xb, yb in batches]  # warm-up
    per_round = []
    for _ in range(rounds):
        attack_wall = attack_cpu = network_wall = network_cpu = evals = 0.0
        dims = []
        for (xb, yb), (gradients, products) in zip(batches, counts, strict=False):
            before = _network_clock(model, xb, yb, gradients / 2, products / 2)
            with _Clock() as clock:
                result = SOAE(model, hvp=mode)(xb, yb)
            after = _network_clock(model, xb, yb, gradients / 2, products / 2)
            if _network_calls(result, mode) != (gradients, products):
                raise RuntimeError("SOAE made a different number of evaluations than in the warm-up")
            attack_wall, attack_cpu = attack_wall + clock.wall, attack_cpu + clock.cpu
            network_wall, network_cpu = network_wall + before.wall + after.wall, network_cpu + before.cpu + after.cpu
            evals += float(result.trace.grad_evals_per_sample.sum()) / batch
            dims += [float(it.krylov.iterations.float().mean()) for it in result.trace.iterations]
        per_round.append({"ratio": attack_wall / network_wall, "ratio_cpu_time": attack_cpu / network_cpu,
                          "grad_evals_per_image": evals / len(batches), "mean_krylov_dim": statistics.mean(dims),
                          "per_image_ms": attack_wall / len(batches) / batch * 1e3,
                          "network_per_image_ms": network_wall / len(batches) / batch * 1e3})
    ratios = [r["ratio"] for r in per_round]
    out = dict(per_round[sorted(range(rounds), key=lambda i: ratios[i])[rounds // 2]])
    out["ratio_cpu_time"] = statistics.median(r["ratio_cpu_time"] for r in per_round)
    out["ratios_all_rounds"] = ratios
    out["ratios_cpu_time_all_rounds"] = [r["ratio_cpu_time"] for r in per_round]
    return out


def load_before_engine(rev: str) -> SimpleNamespace | None:
    """``krylov`` and ``hvp`` as they were at git revision ``rev`` (None if git or the revision
    is missing), each as a fresh module."""
    modules = {}
    for name in ("krylov", "hvp"):
        try:
            source = subprocess.run(["git", "show", f"{rev}:soae_core/{name}.py"], cwd=ROOT, check=True,
                                    capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        module = ModuleType(f"{name}_{rev}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(source, f"{rev}:soae_core/{name}.py", "exec"), module.__dict__)
        modules[name] = module
    return SimpleNamespace(**modules)


NOW = SimpleNamespace(krylov=krylov, hvp=hvp)


@contextmanager
def engine(modules: SimpleNamespace) -> Iterator[None]:
    """SOAE uses the GMRES and the Hessian-vector operator of ``modules`` inside the block."""
    current = soae_module.gmres, soae_module.make_hvp_operator
    soae_module.gmres, soae_module.make_hvp_operator = modules.krylov.gmres, modules.hvp.make_hvp_operator
    try:
        yield
    finally:
        soae_module.gmres, soae_module.make_hvp_operator = current


def _lab_run_attack():
    """The Attack Lab's computation of one attack on one image and its default settings."""
    for name in ("soae_core.lab", "soae_core.analysis.attack_lab", "soae_core.analysis.lab"):
        try:
            lab = importlib.import_module(name)
            break
        except ModuleNotFoundError:
            continue
    else:
        raise ModuleNotFoundError("the Attack Lab's run_attack was not found")
    settings_module = importlib.import_module(lab.AttackSettings.__module__)
    return lab.run_attack, settings_module.AttackSettings().attack_kwargs("SOAE", "fashion_mnist")


def measure_lab_cold(model, images, labels, before: SimpleNamespace) -> dict:
    """Attack Lab SOAE on 8 single images, cold, before vs now (alternating order per image)."""
    run_attack, kwargs = _lab_run_attack()
    wall, cpu = {"before": 0.0, "now": 0.0}, {"before": 0.0, "now": 0.0}
    run_attack(model, images[:1], int(labels[0]), "SOAE", kwargs)  # warm-up (imports, allocator)
    for i in range(8):
        for which in ("before", "now") if i % 2 == 0 else ("now", "before"):
            with engine(before if which == "before" else NOW), _Clock() as clock:
                run_attack(model, images[i:i + 1], int(labels[i]), "SOAE", kwargs)
            wall[which] += clock.wall / 8
            cpu[which] += clock.cpu / 8
    return {"before_ms_per_image": wall["before"] * 1e3, "now_ms_per_image": wall["now"] * 1e3,
            "speedup": wall["before"] / wall["now"], "speedup_cpu_time": cpu["before"] / cpu["now"],
            "settings": {k: v for k, v in kwargs.items() if k != "loss_fn"}}


def measure_split(model, images, labels, batch: int, modules: SimpleNamespace) -> dict:
    """Where SOAE's time (finite differences, engine ``modules``) goes at one batch size, in CPU
    time: the real attack; a replay whose GMRES makes the same operator calls (same samples) and
    returns the recorded result (same trajectory, no solver bookkeeping); the same number of
    bare gradients."""
    batches = _batches(images, labels, batch)
    cpu = {"attack": 0.0, "replay": 0.0, "gradients": 0.0}
    for x, y in batches:
        with engine(modules):
            SOAE(model)(x, y)  # warm-up: the shrinking batch meets new shapes once
        recorded = []

        def record(*args, **kwargs):
            recorded.append(modules.krylov.gmres(*args, **kwargs))  # noqa: B023 - used within this iteration only
            return recorded[-1]  # noqa: B023

        def replay(matvec, b, *args, **kwargs):
            result = next(replayed)  # noqa: B023
            for call in range(int(result.products_per_sample.max())):
                index = (result.products_per_sample > call).nonzero()[:, 0]  # the samples active then
                matvec(b[index], index=index)
            return result

        with engine(modules):
            soae_module.gmres = record
            with _Clock() as attack:
                result = SOAE(model)(x, y)
            replayed = iter(recorded)
            soae_module.gmres = replay
            with _Clock() as again:
                SOAE(model)(x, y)
        gradients = _network_clock(model, x, y, *_network_calls(result, "finite_difference"))
        for key, clock in (("attack", attack), ("replay", again), ("gradients", gradients)):
            cpu[key] += clock.cpu / len(batches) / batch
    return {"cpu_ms_per_image": {k: v * 1e3 for k, v in cpu.items()},
            "ratio_cpu_time": cpu["attack"] / cpu["gradients"],
            "ratio_cpu_time_without_solver_bookkeeping": cpu["replay"] / cpu["gradients"]}


class _CallCounter(TorchFunctionMode):
    """Counts torch calls made from Python, and among them those that copy a value to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = self.syncs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        self.syncs += getattr(func, "__name__", "") in SYNCING
        return func(*args, **(kwargs or {}))


def calls_per_step(module: ModuleType) -> dict:
    """Host syncs and torch calls per Krylov step of ``module.gmres`` (batch 4, a system that
    never converges, an operator of one call), from two solves of 10 and 30 steps."""
    diagonal = torch.logspace(0, -8, 400, dtype=torch.float64)
    b = torch.randn(4, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    counts = {}
    module.gmres(lambda v, index: v * diagonal, b, tau=1e-30, max_iter=10)  # warm-up: per-solve caches filled once
    for steps in (10, 30):
        with _CallCounter() as counter:
            result = module.gmres(lambda v, index: v * diagonal, b, tau=1e-30, max_iter=steps)
        assert int(result.iterations.min()) == steps, "the counting system must not stop early"
        counts[steps] = counter
    return {"host_syncs": (counts[30].syncs - counts[10].syncs) / 20,
            "torch_calls": (counts[30].calls - counts[10].calls) / 20}


def main() -> None:
    parser = argparse.ArgumentParser(description="SOAE engine benchmark (cost per gradient at batch 1–128)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on the shared 2-core machine 2 threads were slower)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per batch size and mode (median reported)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--before", default=BEFORE_REV,
                        help="git revision whose soae_core/krylov.py and hvp.py are the 'before' engine (default: the MGS one); 'none' measures no before engine")
    parser.add_argument("--output", default="soae",
                        help="result name: writes bench/results/<output>.json (default soae, the documented run)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the model's and images' dtype (float32: the issue's case; float64: the app's default "
                             "precision since issue 17)")
    add_device_argument(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, images, labels, model_name = _model_and_images(device, getattr(torch, args.dtype))
    results: dict = {"load_average_at_start": os.getloadavg()[0], "model": model_name, "threads": args.threads,
                     "dtype": args.dtype,
                     "rounds": args.rounds, "device": str(device),
                     "settings": "SOAE defaults: eps 8/255, eta 1e-5, tau 1e-3, N 4, m <= 30, sign step",
                     "targets_finite_difference": {str(k): v for k, v in TARGETS.items()}}
    before = None if args.before == "none" else load_before_engine(args.before)
    results["per_krylov_step"] = calls_per_step(krylov)
    if before is not None:
        results["per_krylov_step_before"] = calls_per_step(before.krylov)
    for mode in ("finite_difference", "exact"):
        results[mode] = {str(b): measure_batch(model, images, labels, b, mode, args.rounds) for b in args.batch_sizes}
    results["split_finite_difference"] = {str(b): measure_split(model, images, labels, b, NOW)
                                          for b in args.batch_sizes if b in TARGETS}
    if before is not None:
        with engine(before):
            results["before"] = {"revision": args.before, "finite_difference": {
                str(b): measure_batch(model, images, labels, b, "finite_difference", args.rounds)
                for b in args.batch_sizes if b in TARGETS}}
        results["before"]["split_finite_difference"] = {
            str(b): measure_split(model, images, labels, b, before) for b in args.batch_sizes if b in TARGETS}
        results["attack_lab_cold_single_image"] = measure_lab_cold(model, images, labels, before)
    path = write_result(args.output, results)

    print(f"machine: {machine()} (load average at the start: {results['load_average_at_start']:.2f})")
    print(f"model: {model_name}; {results['settings']}")
    for key, label in (("per_krylov_step", "now"), ("per_krylov_step_before", "before")):
        if key in results:
            print(f"per Krylov step ({label}): {results[key]['host_syncs']:g} host synchronisation(s), "
                  f"{results[key]['torch_calls']:g} torch calls from Python (batch 4, step 10 to 30)")
    print("wall ÷ (gradient evaluations × one gradient at the same batch size), median of rounds:")
    for mode in ("finite_difference", "exact"):
        for batch, r in results[mode].items():
            target = TARGETS.get(int(batch)) if mode == "finite_difference" else None
            mark = "" if target is None else f" (target ≤ {target}: {'met' if r['ratio'] <= target else 'NOT met'})"
            print(f"  {mode:17s} batch {batch:>3s}: {r['ratio']:.2f}{mark}, CPU time {r['ratio_cpu_time']:.2f}; "
                  f"{r['grad_evals_per_image']:.1f} evals/image, m̄ {r['mean_krylov_dim']:.1f}, "
                  f"{r['per_image_ms']:.1f} ms/image (network {r['network_per_image_ms']:.1f} ms)")
    splits = [("now", results["split_finite_difference"])]
    if before is not None:
        splits.append((f"before ({args.before})", results["before"]["split_finite_difference"]))
    for label, split_by_batch in splits:
        for batch, split in split_by_batch.items():
            print(f"  {label} finite_difference batch {batch:>3s}, CPU time: {split['ratio_cpu_time']:.2f} with the "
                  f"solver, {split['ratio_cpu_time_without_solver_bookkeeping']:.2f} replaying its operator calls "
                  f"without it")
    if before is not None:
        for batch, r in results["before"]["finite_difference"].items():
            print(f"  before ({args.before}) finite_difference batch {batch:>3s}: {r['ratio']:.2f}, "
                  f"CPU time {r['ratio_cpu_time']:.2f}; {r['per_image_ms']:.1f} ms/image")
        lab = results["attack_lab_cold_single_image"]
        print(f"Attack Lab SOAE, one image, cold: {lab['before_ms_per_image']:.0f} ms before → "
              f"{lab['now_ms_per_image']:.0f} ms now ({lab['speedup']:.2f}× faster; CPU time {lab['speedup_cpu_time']:.2f}×)")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
