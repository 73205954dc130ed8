"""Speed-up of 2 torchrun ranks over 1 process (issue 14): an evaluation grid and a PGD-AT epoch.

    python bench/bench_distributed.py [--device cpu] [--ranks 2]

Target (the project's 2-core machine): ≥ 1.7× for both. Each measurement runs the real CLI — once
as one process, once as ``--ranks`` torchrun ranks — and times what the CLI itself records (the
evaluation's duration, the epoch's seconds), so interpreter start-up and model loading are left
out; the whole command's wall time is written beside it. The evaluation's numbers must be
identical between the two runs (checked here too). The load average before and after each run is
recorded: on a shared machine a speed-up is only meaningful next to it.
Writes bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_result

ROOT = Path(__file__).resolve().parents[1]

GRID = ["--models", "fmnist-cnn-std", "fmnist-cnn-pgd", "--attacks", "FGSM", "PGD", "ASOD", "SOAE",
        "--eps", "0.1", "--n-images", "200", "--batch-size", "25", "--threads", "1", "--quiet"]
EPOCH = ["--model", "fmnist-cnn-pgd", "--method", "pgd", "--epochs", "1", "--train-subset", "2048",
         "--batch-size", "128", "--test-subset", "10", "--eval-pgd-n", "1", "--eval-soae-n", "0", "--no-progress"]


def run(command: list[str]) -> tuple[float, dict[str, float]]:
    """Run ``command`` in the repository; returns (wall seconds, load averages before/after)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return wall, {"load_before": before, "load_after": os.getloadavg()[0]}


def launcher(ranks: int, module: str) -> list[str]:
    """``python -m module`` for one rank, torchrun for several."""
    if ranks == 1:
        return [sys.executable, "-m", module]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "-m", module]


def strip_times(results: dict) -> dict:
    """The numbers of a results.json without its wall times (those differ from run to run)."""
    attacks = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in results["attacks"]]
    return {"attacks": attacks, "models": results["models"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    out: dict = {"machine_at_start": machine(), "ranks": args.ranks, "device": args.device,
                 "grid_command": " ".join(["python -m soae_core.evaluate", *GRID]),
                 "epoch_command": " ".join(["python -m soae_core.train", *EPOCH])}
    with tempfile.TemporaryDirectory() as tmp:
        evaluation = {}
        for ranks in (1, args.ranks):
            folder = Path(tmp) / f"eval{ranks}"
            wall, load = run([*launcher(ranks, "soae_core.evaluate"), *GRID, "--device", args.device,
                              "--out", str(folder)])
            results = json.loads((folder / "results.json").read_text())
            evaluation[ranks] = {"duration_s": results["meta"]["duration_s"], "command_wall_s": wall, **load,
                                 "numbers": strip_times(results),
                                 "busy_s": [r.get("grid_busy_s") for r in results["meta"]["per_rank"]]}
            print(f"evaluation, {ranks} rank(s): {results['meta']['duration_s']:.1f} s "
                  f"(command {wall:.1f} s, load {load['load_before']:.1f} → {load['load_after']:.1f})", flush=True)
        identical = evaluation[1].pop("numbers") == evaluation[args.ranks].pop("numbers")
        speedup = evaluation[1]["duration_s"] / evaluation[args.ranks]["duration_s"]
        out["evaluation"] = {"runs": evaluation, "identical_numbers": identical, "speedup": speedup,
                             "efficiency": speedup / args.ranks}
        training = {}
        for ranks in (1, args.ranks):
            folder = Path(tmp) / f"train{ranks}"
            wall, load = run([*launcher(ranks, "soae_core.train"), *EPOCH, "--device", args.device,
                              "--out-dir", str(folder), "--checkpoint-dir", str(folder / "ck")])
            card = json.loads((folder / "fmnist-cnn-pgd.json").read_text())
            training[ranks] = {"epoch_s": card["history"][0]["seconds"], "loss": card["history"][0]["loss"],
                               "command_wall_s": wall, **load}
            print(f"PGD-AT epoch, {ranks} rank(s): {training[ranks]['epoch_s']:.1f} s "
                  f"(loss {training[ranks]['loss']:.5f}, load {load['load_before']:.1f} → {load['load_after']:.1f})",
                  flush=True)
        epoch_speedup = training[1]["epoch_s"] / training[args.ranks]["epoch_s"]
        out["pgd_epoch"] = {"runs": training, "speedup": epoch_speedup, "efficiency": epoch_speedup / args.ranks}
    out["machine_at_end"] = machine()
    path = write_result("distributed", out)
    print(f"evaluation speed-up {speedup:.2f}× (identical numbers: {identical}); "
          f"PGD-AT epoch speed-up {epoch_speedup:.2f}× (target ≥ 1.7× each); written {path}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
