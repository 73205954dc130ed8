"""One prepared command for a machine with a CUDA GPU (issue 16): ``python bench/gpu_check.py``.

Prints, in under 5 minutes on one GPU:

1. the CUDA tests' result (``pytest -k cuda``: the engine, each attack, an app page, a training step,
   the Krylov solver's host-sync check);
2. SOAE wall time ÷ network time on the GPU at batch 1 and batch 128 (the network time is the
   gradient evaluations the attack spent × the measured time of one gradient at that batch size);
3. the per-image batching gain (per-image time at batch 1 ÷ per-image time at batch 128);
4. one evaluation cell (bundled standard CNN, SOAE, ε = 8/255) on 1 000 test images, GPU vs CPU;
5. host synchronisations per Krylov step (``torch.cuda.set_sync_debug_mode`` warnings counted over
   one SOAE call ÷ the GMRES loop steps it ran);
6. the app's dynamic batcher (issue 17) on the GPU: 30 students' requests with the same settings as one
   batched call (``soae_app.compute.attack_batch``, what the worker pool runs) vs one by one
   (``compute.attack``), for PGD (float32) and SOAE (float64, where batching is exact): seconds and
   how many students' results differ from their run alone (``attack_lab.batch_differences``).

Writes bench/results/gpu_check.json. Without CUDA it says so and exits with status 1: the numbers
are only meaningful on a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import machine, write_result

from soae_core.attacks import SOAE
from soae_core.data import load_samples
from soae_core.device import describe_device, resolve_device, synchronize
from soae_core.hvp import input_gradient
from soae_core.models import load_model

ROOT = Path(__file__).resolve().parents[1]

MODEL = "fmnist-cnn-std"


def timed(fn, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of fn() on ``device`` (synchronised, after one warm-up call)."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def cuda_tests() -> str:
    """The last line of ``pytest -k cuda`` (every test with CUDA in its name or module; e.g. '30 passed')."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-k", "cuda", "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    return f"exit {done.returncode}: {lines[-1] if lines else done.stderr[-300:]}"


def overhead(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """SOAE (paper's finite-difference products, 4 iterations) wall ÷ network time at batch len(x)."""
    gradient_s = timed(lambda: input_gradient(model, x, y), device, repeats=10)
    attack = SOAE(model, eps=8 / 255, hvp="finite_difference", steps=4, keep_images=False)
    result = None

    def run():
        nonlocal result
        result = attack(x, y)

    wall = timed(run, device, repeats=3)
    network = result.grad_evals * gradient_s
    return {"batch": int(x.shape[0]), "wall_s": wall, "grad_evals": result.grad_evals,
            "one_gradient_s": gradient_s, "network_s": network, "wall_over_network": wall / network,
            "per_image_s": wall / x.shape[0]}


def syncs_per_krylov_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Synchronising CUDA calls during one SOAE call, per GMRES loop step."""
    attack = SOAE(model, eps=8 / 255, hvp="finite_difference", steps=1, keep_images=False)
    attack(x, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = attack(x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    steps = sum(int(it.krylov.iterations.max()) for it in result.trace.iterations)
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return {"syncs_in_call": syncs, "krylov_steps": steps, "syncs_per_krylov_step": syncs / max(steps, 1),
            "note": "includes the attack's own syncs outside GMRES (validation, gradient, prediction)"}


def evaluation_cell_seconds(device: str, n: int, out: Path) -> float:
    """Seconds of one evaluation cell (standard CNN, SOAE, ε = 8/255) on n test images on ``device``:
    the attack's own wall time as the CLI records it (metrics, loading and start-up excluded)."""
    command = [sys.executable, "-m", "soae_core.evaluate", "--models", MODEL, "--attacks", "SOAE", "--eps", "8/255",
               "--n-images", str(n), "--batch-size", "500", "--device", device, "--quiet", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-1000:]}")
    return float(json.loads((out / "results.json").read_text())["attacks"][0]["wall_time_s"])


def class_batcher(device: torch.device, students: int = 30) -> dict:
    """The worker pool's batched call for ``students`` same-settings requests vs each alone."""
    from soae_app import compute
    from soae_core.analysis import attack_lab
    from soae_core.analysis.settings import DEFAULT_SETTINGS

    samples = load_samples("fashion_mnist")
    out = {}
    for name, dtype in (("PGD", "float32"), ("SOAE", "float64")):
        spec = compute.ModelSpec(MODEL, dtype, "", None, str(device))
        kwargs = DEFAULT_SETTINGS.attack_kwargs(name, "fashion_mnist")
        requests = [compute.AttackRequest(spec, samples.images[i].numpy(), int(samples.labels[i]), name, kwargs)
                    for i in range(students)]
        net = compute.model(spec)
        compute.attack(net, requests[0].image, requests[0].label, name, kwargs)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        alone = [compute.attack(net, r.image, r.label, name, kwargs) for r in requests]
        synchronize(device)
        alone_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = compute.attack_batch(requests)
        synchronize(device)
        batched_s = time.perf_counter() - start
        out[name] = {"dtype": dtype, "students": students, "one_by_one_s": alone_s, "batched_s": batched_s,
                     "speedup": alone_s / batched_s,
                     "members_differing": sum(bool(attack_lab.batch_differences(b, a))
                                              for a, b in zip(alone, batched, strict=True))}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the GPU to check (cuda or cuda:N)")
    parser.add_argument("--cell-images", type=int, default=1000)
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device in this process: bench/gpu_check.py only measures on a GPU", file=sys.stderr)
        return 1
    device = resolve_device(args.device)
    started = time.perf_counter()
    out: dict = {"device": describe_device(device)}
    print(f"machine: {machine()}\ndevice: {out['device']}", flush=True)
    if not args.skip_tests:
        out["cuda_tests"] = cuda_tests()
        print(f"1. CUDA tests: {out['cuda_tests']}", flush=True)
    model = load_model(MODEL, device=device)
    samples = load_samples("fashion_mnist")
    images = samples.images.repeat(2, 1, 1, 1)[:128].to(device)
    labels = samples.labels.repeat(2)[:128].to(device)
    out["batch_1"] = overhead(model, images[:1], labels[:1], device)
    out["batch_128"] = overhead(model, images, labels, device)
    out["batching_gain"] = out["batch_1"]["per_image_s"] / out["batch_128"]["per_image_s"]
    print(f"2. SOAE wall ÷ network time: batch 1 {out['batch_1']['wall_over_network']:.2f}, "
          f"batch 128 {out['batch_128']['wall_over_network']:.2f}", flush=True)
    print(f"3. per-image batching gain (batch 1 → 128): {out['batching_gain']:.1f}×", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        gpu_s = evaluation_cell_seconds(str(device), args.cell_images, Path(tmp) / "gpu")
        cpu_s = evaluation_cell_seconds("cpu", args.cell_images, Path(tmp) / "cpu")
    out["evaluation_cell"] = {"images": args.cell_images, "gpu_s": gpu_s, "cpu_s": cpu_s, "speedup": cpu_s / gpu_s}
    print(f"4. evaluation cell, {args.cell_images} images: GPU {gpu_s:.2f} s, CPU {cpu_s:.2f} s "
          f"(torch's default threads) → {cpu_s / gpu_s:.1f}×", flush=True)
    out["host_syncs"] = syncs_per_krylov_step(model, images, labels)
    print(f"5. host syncs per Krylov step: {out['host_syncs']['syncs_per_krylov_step']:.2f} "
          f"({out['host_syncs']['syncs_in_call']} in one call, {out['host_syncs']['krylov_steps']} steps)")
    out["class_batcher"] = class_batcher(device)
    for name, row in out["class_batcher"].items():
        print(f"6. batcher, {row['students']} students, {name} ({row['dtype']}): one by one {row['one_by_one_s']:.2f} s, "
              f"batched {row['batched_s']:.2f} s → {row['speedup']:.1f}×; members differing from their run alone "
              f"{row['members_differing']} of {row['students']}", flush=True)
    out["total_s"] = time.perf_counter() - started
    print(f"total {out['total_s']:.0f} s; written {write_result('gpu_check', out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
