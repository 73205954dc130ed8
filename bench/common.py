"""Helpers shared by the benchmarks: machine description, timing, result files."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for soae_core
from soae_core.experiments.machine import describe_machine  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """One line naming the machine (``soae_core.experiments.machine.describe_machine``)."""
    return describe_machine()


def median_seconds(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of fn() in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_result(name: str, payload: dict) -> Path:
    """Write bench/results/<name>.json with the machine line and a timestamp added."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path
