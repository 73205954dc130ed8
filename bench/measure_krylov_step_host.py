"""Issue 15's remaining lead, measured end to end: what one GMRES Krylov step costs at batch 1
besides its product — the engine's torch bookkeeping against a NumPy prototype of the same
arithmetic on the host — in units of one input gradient of the bundled CNN (the yardstick of the
issue's ratio). Written to decide whether a host-side solver for batch-1 CPU solves would meet the
issue's ≤ 1.3; ``bench/results/krylov_step_host.json`` was measured at ``6513be3``, when ``gmres`` had
only its batched torch loop. Since ``19bd9f8`` one system on the CPU takes ``krylov._solve_host``, so
a rerun compares that host loop (with ``gmres``' validation and operator wrapper) with the prototype.

Operator: a diagonal matrix with 784 distinct eigenvalues (one multiplication, timed alone and
subtracted), so GMRES runs to its cap; τ = 1e-14. The NumPy prototype does what the engine does
per step — CGS2 against the basis rows, the Hessenberg column, the breakdown test against the
running ‖A v‖, the new basis row, the accumulated Givens rotations and the residual estimate — and
assembles x_m at the end; it converts the vector to and from torch around each product, as a
host-side step inside the attack would. Both at caps m = 12 (the bundled CNN's mean Krylov
dimension with the paper's settings is ~12) and 30; float32 and float64; one torch thread;
medians of 200 solves. It checks that both give the same solution (to 1e-4 relative in float32,
1e-10 in float64), and projects the issue's batch-1 ratio from ``bench_soae.py``'s committed replay
split (``bench/results/soae.json``, ``soae_float64.json``): the ratio without the solver plus the
solver's share × host ÷ engine step.

Run: ``.venv/bin/python bench/measure_krylov_step_host.py``; writes
bench/results/krylov_step_host.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from common import median_seconds, write_result

from soae_core.hvp import input_gradient
from soae_core.krylov import gmres
from soae_core.models import load_model

N, REPEATS, TAU = 784, 200, 1e-14
ROOT = Path(__file__).resolve().parents[1]


def gmres_host(matvec, b: np.ndarray, tau: float, max_iter: int, tol: float) -> np.ndarray:
    """Restart-free GMRES of one system on the host, the engine's arithmetic (see the module docstring)."""
    beta = float(np.sqrt(b @ b))
    basis = np.zeros((max_iter + 1, b.size), dtype=b.dtype)
    basis[0] = b / beta
    hess_t = np.zeros((max_iter, max_iter + 1), dtype=b.dtype)
    rotations = np.eye(max_iter + 1, dtype=b.dtype)
    scale, m = 0.0, 0
    for j in range(max_iter):
        w = matvec(basis[j])
        scale = max(scale, float(np.sqrt(w @ w)))
        rows = basis[: j + 1]
        h = rows @ w
        w = w - h @ rows
        correction = rows @ w
        w = w - correction @ rows
        h = h + correction
        h_next = float(np.sqrt(w @ w))
        hess_t[j, : j + 1], hess_t[j, j + 1] = h, h_next
        extends = h_next > scale * tol
        if extends:
            basis[j + 1] = w / h_next
        columns = rotations[: j + 2, j: j + 2]
        pair = hess_t[j, : j + 2] @ columns
        radius = float(np.hypot(pair[0], pair[1]))
        c, s = (pair / radius) if radius > 0 else (1.0, 0.0)
        rotations[: j + 2, j: j + 2] = columns @ np.array([[c, -s], [s, c]], dtype=b.dtype)
        m = j + 1
        if not extends or abs(rotations[0, j + 1]) < tau:
            break
    square = (rotations.T @ hess_t.T)[:m, :m]
    gamma = np.linalg.solve(np.triu(square), beta * rotations[0, :m])
    return gamma @ basis[:m]


# bench_soae.py's replay split at batch 1 (finite differences), per dtype: the attack, the same
# products replayed without the solver, and the gradients alone (CPU ms per image).
SPLITS = {"float32": "bench/results/soae.json", "float64": "bench/results/soae_float64.json"}


def projection(dtype_name: str, row: dict) -> dict:
    """The issue's batch-1 ratio if each step's bookkeeping cost the host prototype's instead of the
    engine's: the ratio without the solver plus the solver's share scaled by host ÷ engine (per cap)."""
    split = json.loads((ROOT / SPLITS[dtype_name]).read_text())["split_finite_difference"]["1"]["cpu_ms_per_image"]
    without = split["replay"] / split["gradients"]
    share = (split["attack"] - split["replay"]) / split["gradients"]
    scaled = {cap: without + share * row[f"cap_{cap}"]["host_step_us"] / row[f"cap_{cap}"]["engine_step_us"]
              for cap in (12, 30)}
    return {"now": round(without + share, 3), "without_solver": round(without, 3),
            **{f"with_host_step_cap_{cap}": round(value, 3) for cap, value in scaled.items()}}


def main() -> None:
    torch.set_num_threads(1)
    results: dict[str, dict] = {}
    for dtype in (torch.float32, torch.float64):
        name = str(dtype).removeprefix("torch.")
        model = load_model("fmnist-cnn-std", dtype=dtype)
        x = torch.rand(1, 1, 28, 28, dtype=dtype, generator=torch.Generator().manual_seed(0))
        y = torch.tensor([3])
        gradient_s = median_seconds(lambda model=model, x=x, y=y: input_gradient(model, x, y), REPEATS, 20)
        diagonal = torch.linspace(1.0, 100.0, N, dtype=dtype)
        b = torch.rand(1, N, dtype=dtype, generator=torch.Generator().manual_seed(1))
        tol = float(torch.finfo(dtype).eps) ** 0.5

        def engine_matvec(v: torch.Tensor, index: torch.Tensor, diagonal=diagonal) -> torch.Tensor:
            return v * diagonal

        def host_matvec(v: np.ndarray, diagonal=diagonal) -> np.ndarray:
            return (torch.from_numpy(v)[None] * diagonal).numpy()[0]  # to torch and back, as in the attack

        v = b.clone()
        product_s = median_seconds(lambda v=v, diagonal=diagonal: v * diagonal, REPEATS * 10, 50)
        row = {"gradient_ms": gradient_s * 1e3, "product_ms": product_s * 1e3}
        for cap in (12, 30):
            engine_s = median_seconds(lambda cap=cap, b=b, m=engine_matvec: gmres(m, b, tau=TAU, max_iter=cap),
                                      REPEATS, 10)
            host_s = median_seconds(lambda cap=cap, b=b, m=host_matvec, tol=tol:
                                    gmres_host(m, b[0].numpy(), TAU, cap, tol), REPEATS, 10)
            same = np.allclose(gmres(engine_matvec, b, tau=TAU, max_iter=cap).solution[0].numpy(),
                               gmres_host(host_matvec, b[0].numpy(), TAU, cap, tol),
                               rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)
            engine_step, host_step = engine_s / cap - product_s, host_s / cap - product_s
            row[f"cap_{cap}"] = {"engine_step_us": engine_step * 1e6, "host_step_us": host_step * 1e6,
                                 "engine_step_in_gradients": engine_step / gradient_s,
                                 "host_step_in_gradients": host_step / gradient_s, "same_solution": bool(same)}
            print(f"{name} m={cap}: gradient {gradient_s * 1e3:.3f} ms; per step besides the product: engine "
                  f"{engine_step * 1e6:.0f} µs ({engine_step / gradient_s:.2f} gradients), host "
                  f"{host_step * 1e6:.0f} µs ({host_step / gradient_s:.2f}); same solution: {same}", flush=True)
        results[name] = row
        row["projected_batch1_ratio"] = projection(name, row)
        print(f"{name}: batch-1 ratio with a host step, projected from {SPLITS[name]}: "
              f"{row['projected_batch1_ratio']}", flush=True)
    path = write_result("krylov_step_host", {"n": N, "repeats": REPEATS, "tau": TAU, "model": "fmnist-cnn-std",
                                             "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
