"""Batched, matrix-free GMRES (Saad & Schultz 1986) — the Krylov solver of the SOAE attack.

Solves ``A d = b`` for a batch of independent systems, one per sample, without forming ``A``.
Each sample has its own Krylov basis (Arnoldi with modified Gram–Schmidt, optionally a second
re-orthogonalisation pass), its own incremental Givens QR of the Hessenberg matrix (paper eqs.
9–14) and its own stopping decision:

* ``converged``  – the Givens estimate ‖r̃_j‖/β fell below ``tau`` (paper Algorithm 1, line 12);
* ``breakdown``  – h_{j+1,j} ≈ 0: the Krylov space is invariant, the iterate is the exact
  minimiser over it. For the input Hessian of a ReLU network (rank ≤ C−1) this is the normal end;
* ``max_iter``   – the dimension cap was reached;
* ``beta_zero``  – the initial residual is exactly zero (nothing to solve, m = 0);
* ``nonfinite``  – the operator returned NaN/inf for this sample (e.g. a finite-difference
  product that overflowed); the iterate of the last finite step is kept.

Written by hand because no maintained library offers a *batched*, per-sample-stopping,
matrix-free GMRES on torch tensors (scipy's works on one system on the host, torch has none).
The layout follows scipy's ``sparse/linalg/_isolve``: one algorithm in this file, the result a
small named record.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from soae_core.validation import check_int, check_open_interval, check_positive

STOP_REASONS = ("converged", "breakdown", "max_iter", "beta_zero", "nonfinite")

Matvec = Callable[..., torch.Tensor]


@dataclass
class GMRESResult:
    """Outcome of a batched GMRES solve (B samples, each of n unknowns, cap M = max_iter).

    solution: (B, ...) like ``b`` — x_m = x0 + V_m γ for each sample.
    residuals: list of B 1-D tensors (float64, on the host); entry j is the Givens estimate
        ‖b − A x_j‖/β after j Arnoldi steps, so entry 0 is 1.0 (0.0 when β = 0); length m+1.
    true_residuals: like ``residuals`` but ‖b − A x_j‖/β computed with the operator (only when
        requested with ``true_residual=True``, else None).
    iterations: (B,) int64 — m, the Krylov dimension each sample reached.
    converged: (B,) bool — final relative residual estimate < tau.
    stop_reason: list of B strings from :data:`STOP_REASONS`.
    beta: (B,) — ‖b − A x0‖₂ per sample.
    hessenberg: (B, M+1, M) — the Arnoldi matrix H̄ (paper's D_{m+1,m}); for sample i only the
        leading (m_i+1, m_i) block is meaningful. Its square m×m part has the Ritz values.
    matvec_calls: number of operator calls made (each on the still-active samples only).
    operator_samples: total number of sample-products the operator evaluated.
    products_per_sample: (B,) int64 — how many products the operator evaluated for each sample.
    """

    solution: torch.Tensor
    residuals: list[torch.Tensor]
    iterations: torch.Tensor
    converged: torch.Tensor
    stop_reason: list[str]
    beta: torch.Tensor
    hessenberg: torch.Tensor
    true_residuals: list[torch.Tensor] | None = None
    matvec_calls: int = 0
    operator_samples: int = 0
    products_per_sample: torch.Tensor | None = None

    def ritz_values(self, sample: int) -> torch.Tensor:
        """Eigenvalues (complex, shape (m,)) of the m×m Hessenberg block of one sample."""
        m = int(self.iterations[sample])
        if m == 0:
            return torch.zeros(0, dtype=torch.complex128)
        return torch.linalg.eigvals(self.hessenberg[sample, :m, :m].double().cpu())


def _takes_index(matvec: Matvec) -> bool:
    try:
        return "index" in inspect.signature(matvec).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _default_breakdown_tol(dtype: torch.dtype) -> float:
    # sqrt(machine eps) relative to the operator scale. Measured on rank-4 PSD operators with
    # eigenvalues spread over 1e-4: true breakdowns gave h/‖A‖ ≤ 3e-12 (float64) and ≤ 6e-5
    # (float32); genuine new directions ≥ 5e-7 (float64). sqrt(eps) = 1.5e-8 / 3.5e-4 separates
    # them in float64; in float32 anything below ~1e-4·‖A‖ is rounding noise anyway.
    return float(torch.finfo(dtype).eps) ** 0.5


def gmres(
    matvec: Matvec,
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    tau: float = 1e-3,
    max_iter: int = 50,
    *,
    reorthogonalize: bool = False,
    true_residual: bool = False,
    breakdown_tol: float | None = None,
) -> GMRESResult:
    """Solve A d = b for every sample of a batch with restart-free GMRES.

    Args:
        matvec: the operator, mapping a (k, ...) tensor of k samples to (k, ...) sample by sample.
            If it has a keyword parameter ``index``, it is called as ``matvec(v, index=idx)``
            with only the still-active samples and ``idx`` (int64, their positions in the batch),
            so finished samples cost no operator work; otherwise it always gets all B samples
            (finished ones as zeros).
        b: (B, ...) right-hand sides, float32 or float64, any device.
        x0: (B, ...) initial guess (default zeros). The paper uses x0 = g.
        tau: relative residual threshold in (0, 1): a sample stops when ‖r̃_j‖/β < tau.
        max_iter: cap on the Krylov dimension m (≥ 1).
        reorthogonalize: run a second modified Gram–Schmidt pass (more robust, costs 2× the
            orthogonalisation, no extra operator work).
        true_residual: also compute ‖b − A x_j‖/β with the operator at every j (one extra
            operator call per step) — to compare with the Givens estimate.
        breakdown_tol: h_{j+1,j} ≤ breakdown_tol·max_i‖A v_i‖ counts as breakdown
            (default: see :func:`_default_breakdown_tol`).

    Returns:
        A :class:`GMRESResult`.

    Cost: one operator call and at most one host synchronisation per Krylov step (two calls
    with ``true_residual``); no Python loop over the batch.
    """
    if not isinstance(b, torch.Tensor) or not b.is_floating_point() or b.dim() < 1 or b.shape[0] == 0:
        raise ValueError("b must be a non-empty floating-point tensor of shape (B, ...)")
    tau = check_open_interval("tau", tau, 0.0, 1.0)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    if breakdown_tol is None:
        breakdown_tol = _default_breakdown_tol(b.dtype)
    breakdown_tol = check_positive("breakdown_tol", breakdown_tol)
    if x0 is not None and (not isinstance(x0, torch.Tensor) or x0.shape != b.shape):
        raise ValueError(f"x0 must be a tensor of the same shape as b {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("b contains NaN or infinite values")

    batch, shape, dtype, device = b.shape[0], b.shape, b.dtype, b.device
    n = b[0].numel()
    indexed = _takes_index(matvec)
    all_index = torch.arange(batch, device=device)
    calls = {"matvec": 0, "samples": 0}
    products_per_sample = torch.zeros(batch, dtype=torch.int64, device=device)

    def apply(v_flat: torch.Tensor, active_idx: torch.Tensor | None) -> torch.Tensor:
        """Operator on flattened vectors (B, n); inactive rows of the output are zero."""
        calls["matvec"] += 1
        if indexed and active_idx is not None and active_idx.numel() < batch:
            out = torch.zeros_like(v_flat)
            part = matvec(v_flat[active_idx].reshape((-1,) + shape[1:]), index=active_idx)
            out[active_idx] = part.reshape(-1, n).to(dtype)
            calls["samples"] += int(active_idx.numel())
            products_per_sample[active_idx] += 1
            return out
        if indexed:
            result = matvec(v_flat.reshape(shape), index=all_index)
        else:
            result = matvec(v_flat.reshape(shape))
        calls["samples"] += batch
        products_per_sample.add_(1)
        return result.reshape(batch, n).to(dtype)

    b_flat = b.reshape(batch, n)
    x0_flat = torch.zeros_like(b_flat) if x0 is None else x0.reshape(batch, n).to(dtype)
    r0 = b_flat - apply(x0_flat, None) if x0 is not None else b_flat.clone()
    r0_finite = torch.isfinite(r0).all(dim=1)
    r0 = torch.where(r0_finite[:, None], r0, torch.zeros_like(r0))
    beta = torch.linalg.vector_norm(r0, dim=1)
    # x0 already solves the system to rounding: treat as β = 0 (a basis built from rounding
    # noise would be meaningless).
    beta = torch.where(beta <= breakdown_tol * torch.finfo(dtype).eps ** 0.5 * torch.linalg.vector_norm(b_flat, dim=1),
                       torch.zeros_like(beta), beta)
    r0 = torch.where((beta == 0)[:, None], torch.zeros_like(r0), r0)

    basis = torch.zeros(batch, max_iter + 1, n, dtype=dtype, device=device)
    hess = torch.zeros(batch, max_iter + 1, max_iter, dtype=dtype, device=device)  # H̄ (Arnoldi)
    rfac = torch.zeros(batch, max_iter + 1, max_iter, dtype=dtype, device=device)  # R after Givens
    cos = torch.zeros(batch, max_iter, dtype=dtype, device=device)
    sin = torch.zeros(batch, max_iter, dtype=dtype, device=device)
    rhs = torch.zeros(batch, max_iter + 1, dtype=dtype, device=device)  # β Q e1, paper's β q1
    rhs[:, 0] = beta
    safe_beta = torch.where(beta > 0, beta, torch.ones_like(beta))
    basis[:, 0] = r0 / safe_beta[:, None]
    residual_table = torch.full((batch, max_iter + 1), float("nan"), dtype=torch.float64, device=device)
    residual_table[:, 0] = torch.where(beta > 0, 1.0, 0.0).to(torch.float64)
    true_table = residual_table.clone() if true_residual else None

    # reason codes: 0 running, 1 converged, 2 breakdown, 3 max_iter, 4 beta_zero, 5 nonfinite
    reason = torch.zeros(batch, dtype=torch.int64, device=device)
    reason = torch.where(beta == 0, torch.full_like(reason, 4), reason)
    reason = torch.where(~r0_finite, torch.full_like(reason, 5), reason)
    dims = torch.zeros(batch, dtype=torch.int64, device=device)

    operator_scale = torch.zeros(batch, dtype=dtype, device=device)
    active_idx = (reason == 0).nonzero().flatten()  # the one host sync of this step
    for j in range(max_iter):
        if active_idx.numel() == 0:
            break
        running = reason == 0
        w = apply(basis[:, j], active_idx)
        finite = torch.isfinite(w).all(dim=1)
        w = torch.where(finite[:, None], w, torch.zeros_like(w))
        # Running estimate of ‖A‖ per sample: rounding in A v_j is of order eps·‖A‖, so
        # h_{j+1,j} is compared with the largest ‖A v_i‖ seen, not with the current ‖A v_j‖.
        operator_scale = torch.maximum(operator_scale, torch.linalg.vector_norm(w, dim=1))
        h_col = torch.zeros(batch, j + 2, dtype=dtype, device=device)
        for _ in range(2 if reorthogonalize else 1):
            for i in range(j + 1):  # modified Gram–Schmidt: loop over basis vectors, not samples
                h_i = (w * basis[:, i]).sum(dim=1)
                w = w - h_i[:, None] * basis[:, i]
                h_col[:, i] += h_i
        h_next = torch.linalg.vector_norm(w, dim=1)
        h_col[:, j + 1] = h_next
        step_ok = running & finite
        hess[:, : j + 2, j] = torch.where(step_ok[:, None], h_col, hess[:, : j + 2, j])
        broke = step_ok & (h_next <= breakdown_tol * operator_scale)
        safe_next = torch.where(h_next > 0, h_next, torch.ones_like(h_next))
        basis[:, j + 1] = torch.where((step_ok & ~broke)[:, None], w / safe_next[:, None], basis[:, j + 1])

        # Incremental Givens QR (paper eq. 14): apply old rotations to the new column, then a new one.
        col = h_col.clone()
        for i in range(j):
            upper = cos[:, i] * col[:, i] + sin[:, i] * col[:, i + 1]
            lower = -sin[:, i] * col[:, i] + cos[:, i] * col[:, i + 1]
            col[:, i], col[:, i + 1] = upper, lower
        radius = torch.hypot(col[:, j], col[:, j + 1])
        safe_radius = torch.where(radius > 0, radius, torch.ones_like(radius))
        c_new = torch.where(radius > 0, col[:, j] / safe_radius, torch.ones_like(radius))
        s_new = torch.where(radius > 0, col[:, j + 1] / safe_radius, torch.zeros_like(radius))
        col[:, j], col[:, j + 1] = radius, torch.zeros_like(radius)
        cos[:, j] = torch.where(step_ok, c_new, cos[:, j])
        sin[:, j] = torch.where(step_ok, s_new, sin[:, j])
        rfac[:, : j + 2, j] = torch.where(step_ok[:, None], col, rfac[:, : j + 2, j])
        rhs_j, rhs_next = rhs[:, j].clone(), rhs[:, j + 1].clone()
        rhs[:, j] = torch.where(step_ok, c_new * rhs_j, rhs_j)
        rhs[:, j + 1] = torch.where(step_ok, -s_new * rhs_j, rhs_next)

        estimate = (rhs[:, j + 1].abs() / safe_beta).to(torch.float64)
        residual_table[:, j + 1] = torch.where(step_ok, estimate, residual_table[:, j + 1])
        dims = torch.where(step_ok, torch.full_like(dims, j + 1), dims)

        if true_residual:
            x_j = _assemble(x0_flat, basis, rfac, rhs, dims)
            true_res = b_flat - apply(x_j, active_idx)
            true_rel = (torch.linalg.vector_norm(true_res, dim=1) / safe_beta).to(torch.float64)
            true_table[:, j + 1] = torch.where(step_ok, true_rel, true_table[:, j + 1])

        new_reason = torch.zeros_like(reason)
        new_reason = torch.where(step_ok & (j + 1 == max_iter), torch.full_like(reason, 3), new_reason)
        new_reason = torch.where(step_ok & (estimate < tau), torch.full_like(reason, 1), new_reason)
        new_reason = torch.where(broke, torch.full_like(reason, 2), new_reason)
        new_reason = torch.where(running & ~finite, torch.full_like(reason, 5), new_reason)
        reason = torch.where(running, new_reason, reason)
        active_idx = (reason == 0).nonzero().flatten()  # the one host sync of this step

    solution = _assemble(x0_flat, basis, rfac, rhs, dims)
    bad = ~torch.isfinite(solution).all(dim=1)
    solution = torch.where(bad[:, None], x0_flat, solution)
    final_estimate = residual_table.gather(1, dims[:, None]).squeeze(1)

    dims_host = dims.tolist()
    residual_host = residual_table.cpu()
    residuals = [residual_host[i, : dims_host[i] + 1].clone() for i in range(batch)]
    true_residuals = None
    if true_table is not None:
        true_host = true_table.cpu()
        true_residuals = [true_host[i, : dims_host[i] + 1].clone() for i in range(batch)]
    reason_names = [STOP_REASONS[code - 1] for code in reason.tolist()]
    return GMRESResult(
        solution=solution.reshape(shape),
        residuals=residuals,
        true_residuals=true_residuals,
        iterations=dims,
        converged=final_estimate < tau,
        stop_reason=reason_names,
        beta=beta,
        hessenberg=hess,
        matvec_calls=calls["matvec"],
        operator_samples=calls["samples"],
        products_per_sample=products_per_sample,
    )


def _assemble(x0: torch.Tensor, basis: torch.Tensor, rfac: torch.Tensor, rhs: torch.Tensor,
              dims: torch.Tensor) -> torch.Tensor:
    """x_m = x0 + V_m γ with R_m γ = (β Q e1)(1:m) solved per sample (paper eq. 13).

    Samples with m < M get identity rows/columns beyond m, so one batched triangular solve
    serves every sample.
    """
    batch, max_iter = rfac.shape[0], rfac.shape[2]
    if max_iter == 0:
        return x0
    positions = torch.arange(max_iter, device=x0.device)
    used = positions[None, :] < dims[:, None]  # (B, M)
    square = rfac[:, :max_iter, :max_iter]
    mask2d = used[:, :, None] & used[:, None, :]
    eye = torch.eye(max_iter, dtype=x0.dtype, device=x0.device).expand(batch, -1, -1)
    system = torch.where(mask2d, square, eye)
    # A zero diagonal inside the used block (singular R) would give inf: guard it.
    diag = torch.diagonal(system, dim1=1, dim2=2)
    tiny = torch.finfo(x0.dtype).tiny
    fixed_diag = torch.where(diag.abs() > tiny, diag, torch.full_like(diag, 1.0))
    system = system - torch.diag_embed(diag) + torch.diag_embed(fixed_diag)
    target = torch.where(used, rhs[:, :max_iter], torch.zeros_like(rhs[:, :max_iter]))
    gamma = torch.linalg.solve_triangular(system, target[:, :, None], upper=True).squeeze(2)
    gamma = torch.where(used, gamma, torch.zeros_like(gamma))
    return x0 + torch.einsum("bm,bmn->bn", gamma, basis[:, :max_iter])
