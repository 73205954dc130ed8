"""One classical Gram–Schmidt pass twice (CGS2) at batch 1, as torch calls and as the same NumPy
calls on the same memory: what a host-side Krylov step for batch-1 CPU solves could save (a lead
for issue 15, not used by the engine).

Basis of m + 1 = 21 rows of n = 784 (a 28 × 28 image), one new vector: the engine's two passes
(``krylov._orthogonalize``) then ‖w‖; one torch thread; float32 and float64; medians of 5000 calls.

Run: ``.venv/bin/python bench/measure_cgs2_host.py``; prints µs per CGS2 block and writes
bench/results/cgs2_host.json.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from common import median_seconds, write_result

from soae_core.krylov import _orthogonalize

N, ROWS, REPEATS = 784, 21, 5000


def cgs2_torch(basis: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The engine's CGS2 of w (1, 1, n) against the rows of basis (1, k, n), then ‖w‖ (its next step)."""
    with torch.inference_mode():
        return torch.linalg.vector_norm(_orthogonalize(basis, w, 2)[0], dim=2, keepdim=True)


def cgs2_numpy(basis: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The same calls on the host: basis (k, n), w (n,)."""
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
        result[name] = {key: median_seconds(fn, repeats=REPEATS, warmup=200) * 1e6
                        for key, fn in (("torch_us", on_device), ("numpy_us", on_host))}
        print(f"{name}: torch {result[name]['torch_us']:.1f} µs, NumPy {result[name]['numpy_us']:.1f} µs per CGS2 block")
    result["load_after"] = os.getloadavg()
    print(f"written to {write_result('cgs2_host', result)}")


if __name__ == "__main__":
    main()
