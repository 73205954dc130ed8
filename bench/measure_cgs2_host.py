"""One classical Gram–Schmidt pass twice (CGS2) at batch 1, as torch calls and as the same NumPy
calls on the same memory: what a host-side Krylov step for batch-1 CPU solves could save (a lead
for issue 15, not used by the engine).

Basis of m + 1 = 21 rows of n = 784 (a 28 × 28 image), one new vector: two passes of
coefficients = V w, w −= coefficientsᵀ V, then ‖w‖; one torch thread; float32 and float64.

Run: ``.venv/bin/python bench/measure_cgs2_host.py``; prints µs per CGS2 block and writes
bench/results/cgs2_host.json.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
N, ROWS, REPEATS = 784, 21, 5000


def microseconds(fn) -> float:
    for _ in range(200):
        fn()
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn()
    return (time.perf_counter() - start) / REPEATS * 1e6


def cgs2_torch(basis: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """CGS2 of w (1, 1, n) against the rows of basis (1, k, n), as the engine's torch calls."""
    with torch.inference_mode():
        coefficients = torch.bmm(w, basis.mT)
        v = w - torch.bmm(coefficients, basis)
        correction = torch.bmm(v, basis.mT)
        v = v - torch.bmm(correction, basis)
        return torch.linalg.vector_norm(v, dim=2, keepdim=True)


def cgs2_numpy(basis: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The same on the host: basis (k, n), w (n,)."""
    coefficients = basis @ w
    v = w - coefficients @ basis
    correction = basis @ v
    v = v - correction @ basis
    return np.sqrt(v @ v)


def main() -> None:
    torch.set_num_threads(1)
    result = {"n": N, "basis_rows": ROWS, "load_before": os.getloadavg()}
    for dtype in (torch.float32, torch.float64):
        basis = torch.randn(1, ROWS, N, dtype=dtype)
        w = torch.randn(1, 1, N, dtype=dtype)
        on_device = functools.partial(cgs2_torch, basis, w)
        on_host = functools.partial(cgs2_numpy, basis.numpy()[0], w.numpy()[0, 0])  # the same memory
        assert np.allclose(on_device().item(), float(on_host()), rtol=1e-4)
        name = str(dtype).removeprefix("torch.")
        result[name] = {"torch_us": microseconds(on_device), "numpy_us": microseconds(on_host)}
        print(f"{name}: torch {result[name]['torch_us']:.1f} µs, NumPy {result[name]['numpy_us']:.1f} µs per CGS2 block")
    result["load_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cgs2_host.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
