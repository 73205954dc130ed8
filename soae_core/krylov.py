"""Batched, matrix-free GMRES (Saad & Schultz 1986) — the Krylov solver of the SOAE attack.

Solves ``A d = b`` for a batch of independent systems, one per sample, without forming ``A``.
Each sample has its own Krylov basis (Arnoldi with classical Gram–Schmidt applied twice, CGS2),
its own Givens QR of the Hessenberg matrix (paper eqs. 9–14) and its own stopping decision, a
:class:`StopReason` (``GMRESResult.stop_codes``; ``stop_reason`` holds the lowercase names):

* ``CONVERGED`` (1, "converged") – the Givens estimate ‖r̃_j‖/β fell below ``tau`` (paper
  Algorithm 1, line 12);
* ``BREAKDOWN`` (2, "breakdown") – h_{j+1,j} ≈ 0: the Krylov space is invariant, the iterate is
  the exact minimiser over it. For the input Hessian of a ReLU network (rank ≤ C−1) this is the
  normal end;
* ``MAX_ITER`` (3, "max_iter") – the dimension cap was reached;
* ``BETA_ZERO`` (4, "beta_zero") – the initial residual is exactly zero (nothing to solve, m = 0);
* ``NONFINITE`` (5, "nonfinite") – the operator returned NaN/inf for this sample (e.g. a
  finite-difference product that overflowed); the iterate of the last finite step is kept.

Every Krylov step costs one operator call, at most one host synchronisation (the list of
still-active samples, which the operator needs) and a fixed number of batched tensor operations,
whatever the step j: each Gram–Schmidt pass is two batched vector–matrix products over the
preallocated basis (B, M+1, n), and the Givens rotations are accumulated into one orthogonal
matrix Qᵀ (B, M+1, M+1), so all earlier rotations reach the new Hessenberg column in one batched
product and the new rotation is one batched 2×2 product; R = Qᵀ H̄ is formed once, when the
solution is assembled. (The modified Gram–Schmidt loop and rotation-by-rotation update this
replaced cost O(j) small operations per step — at batch 1 more than the network. CGS2 also keeps
the basis orthonormal to rounding where MGS lost digits: see ``tests/test_krylov.py``.)

One system on the CPU (the app's batch of one) runs the same algorithm with its bookkeeping on
the host (:func:`_solve_host`): one numba-compiled call per Krylov step for CGS2, the breakdown
test and the Givens update, where the ~40 torch calls of a batched step cost together as much as
a fifth of the bundled CNN's gradient at batch 1; the tests hold both loops to the same records.

Written by hand because no maintained library offers a *batched*, per-sample-stopping,
matrix-free GMRES on torch tensors (scipy's works on one system on the host, torch has none).
The layout follows scipy's ``sparse/linalg/_isolve``: one algorithm in this file, the result a
small named record.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from typing import Callable

import numpy as np
import torch

from soae_core.validation import check_int, check_open_interval, check_positive

__all__ = ["gmres", "GMRESResult", "StopReason", "STOP_REASONS", "RUNNING", "CONVERGED", "BREAKDOWN",
           "MAX_ITER", "BETA_ZERO", "NONFINITE"]


class StopReason(IntEnum):
    """Why GMRES stopped for one sample; the integer is the code in ``GMRESResult.stop_codes``.

    ``RUNNING`` (0) only appears while the solve is in progress. ``label`` is the lowercase
    name, the string ``GMRESResult.stop_reason`` holds (e.g. ``"breakdown"``).
    """

    RUNNING = 0
    CONVERGED = 1
    BREAKDOWN = 2
    MAX_ITER = 3
    BETA_ZERO = 4
    NONFINITE = 5

    @property
    def label(self) -> str:
        return self.name.lower()


RUNNING, CONVERGED, BREAKDOWN, MAX_ITER, BETA_ZERO, NONFINITE = StopReason
STOP_REASONS = tuple(reason.label for reason in StopReason if reason is not RUNNING)

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
    stop_reason: list of B strings from :data:`STOP_REASONS` (``StopReason.label``).
    beta: (B,) — ‖b − A x0‖₂ per sample.
    hessenberg: (B, M+1, M) — the Arnoldi matrix H̄ (paper's D_{m+1,m}); for sample i only the
        leading (m_i+1, m_i) block is meaningful. Its square m×m part has the Ritz values.
    matvec_calls: number of operator calls made (each on the still-active samples only).
    operator_samples: total number of sample-products the operator evaluated.
    products_per_sample: (B,) int64 — how many products the operator evaluated for each sample.
    stop_codes: (B,) int64 on the solve's device — the :class:`StopReason` codes of
        ``stop_reason`` (compare with ``CONVERGED``, ``BREAKDOWN``, … without leaving the device).
    basis: (B, M+1, ...) the Krylov basis v_0 … v_M (shape of ``b`` per vector) when requested
        with ``return_basis=True``, else None; for sample i the first m_i+1 vectors are
        meaningful (m_i when it ended by breakdown), the rest are zero.
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
    stop_codes: torch.Tensor | None = None
    basis: torch.Tensor | None = None

    def ritz_values(self, sample: int) -> torch.Tensor:
        """Eigenvalues (complex, shape (m,)) of the m×m Hessenberg block of one sample."""
        m = int(self.iterations[sample])
        if m == 0:
            return torch.zeros(0, dtype=torch.complex128)
        return torch.linalg.eigvals(self.hessenberg[sample, :m, :m].double().cpu())


def _takes_index(matvec: Matvec) -> bool:
    """Whether ``matvec`` has a parameter ``index``. A plain function (SOAE makes a fresh closure
    for every solve) is read off its code object, once per code object: ``inspect.signature`` is
    dozens of Python calls, each dear between two gradients at batch 1."""
    if isinstance(matvec, types.FunctionType) and not hasattr(matvec, "__wrapped__") \
            and not hasattr(matvec, "__signature__"):
        return _code_takes_index(matvec.__code__)
    try:
        return "index" in inspect.signature(matvec).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


@functools.cache
def _code_takes_index(code: types.CodeType) -> bool:
    """The parameter names of a function's code object (positional, keyword-only, *args, **kwargs,
    in that order at the start of ``co_varnames``) include ``index``."""
    count = (code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS)
             + bool(code.co_flags & inspect.CO_VARKEYWORDS))
    return "index" in code.co_varnames[:count]


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
    return_basis: bool = False,
) -> GMRESResult:
    """Solve A d = b for every sample of a batch with restart-free GMRES.

    Args:
        matvec: the operator, mapping a (k, ...) tensor of k samples to (k, ...) sample by sample.
            If it has a keyword parameter ``index``, it is called as ``matvec(v, index=idx)``
            with only the still-active samples and ``idx`` (int64, their positions in the batch,
            increasing), so finished samples cost no operator work; otherwise it always gets all
            B samples (what it returns for finished ones is ignored).
        b: (B, ...) right-hand sides, float32 or float64, any device.
        x0: (B, ...) initial guess (default zeros). The paper uses x0 = g.
        tau: relative residual threshold in (0, 1): a sample stops when ‖r̃_j‖/β < tau.
        max_iter: cap on the Krylov dimension m (≥ 1).
        reorthogonalize: run a third classical Gram–Schmidt pass. The default two passes (CGS2)
            already keep the basis orthonormal to rounding ("twice is enough"); the third costs
            1.5× the orthogonalisation and no operator work.
        true_residual: also compute ‖b − A x_j‖/β with the operator at every j (one extra
            operator call per step) — to compare with the Givens estimate.
        breakdown_tol: h_{j+1,j} ≤ breakdown_tol·max_i‖A v_i‖ counts as breakdown
            (default: see :func:`_default_breakdown_tol`).
        return_basis: keep the Krylov basis in the result (``GMRESResult.basis``; B·(M+1)·n
            values, so off by default).

    Returns:
        A :class:`GMRESResult`.

    Cost per Krylov step: one operator call (two with ``true_residual``), at most one host
    synchronisation and a fixed number of batched tensor operations (independent of the step
    and of the batch size); no Python loop over the batch or over the basis.
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

    operator = _Operator(matvec, b, grad_enabled=torch.is_grad_enabled())
    # The solver's own bookkeeping records no autograd graph (about a quarter less overhead per
    # tensor operation at batch 1), unless the caller differentiates through the solve.
    differentiable = torch.is_grad_enabled() and (b.requires_grad or (x0 is not None and x0.requires_grad))
    passes = 3 if reorthogonalize else 2
    if b.shape[0] == 1 and b.device.type == "cpu" and not (differentiable or true_residual or return_basis):
        return _solve_host(operator, b, x0, tau, max_iter, passes, breakdown_tol)
    with torch.set_grad_enabled(differentiable):
        return _solve(operator, b, x0, tau, max_iter, passes, true_residual, breakdown_tol, return_basis)


class _Operator:
    """The operator on flattened vectors, counting calls and per-sample products: takes (B, n)
    or (B, 1, n), returns (B, 1, n) (rows, as the GMRES loop keeps its vectors).

    With an ``index``-aware matvec only the active samples are passed (inactive rows of the
    output are zero); otherwise all B. The matvec runs in the caller's grad and inference modes
    (not in the loop's inference mode).
    """

    def __init__(self, matvec: Matvec, b: torch.Tensor, grad_enabled: bool) -> None:
        self.matvec, self.grad_enabled = matvec, grad_enabled
        self.inference = torch.is_inference_mode_enabled()  # the caller's mode, restored around matvec
        self.indexed = _takes_index(matvec)
        self.batch, self.shape, self.dtype = b.shape[0], b.shape, b.dtype
        self.all_index = torch.arange(self.batch, device=b.device)
        self.calls = self.samples = self.full_calls = 0
        self.partial_products = torch.zeros(self.batch, dtype=torch.int64, device=b.device)

    def __call__(self, v: torch.Tensor, active_idx: torch.Tensor | None = None) -> torch.Tensor:
        if self.indexed and active_idx is not None and active_idx.numel() < self.batch:
            self.calls += 1
            self.samples += int(active_idx.numel())
            self.partial_products[active_idx] += 1
            with torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad_enabled):
                part = self.matvec(v[active_idx].reshape((-1,) + self.shape[1:]), index=active_idx)
            # scattered in the loop's own mode: in its inference mode a product that requires grad
            # (a matvec on trainable parameters) is only read, never recorded against its index
            out = v.new_zeros(self.batch, 1, v.shape[-1])
            out[active_idx] = part.reshape(part.shape[0], 1, -1).to(self.dtype)
            return out
        with torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad_enabled):
            result = self.whole(v.reshape(self.shape))
        return result.reshape(self.batch, 1, -1)

    def whole(self, v: torch.Tensor) -> torch.Tensor:
        """One product of all B samples, v already of b's shape, in the current grad and inference
        modes (the host loop calls it directly: it runs in the caller's modes, nothing to restore)."""
        self.calls += 1
        self.samples += self.batch
        self.full_calls += 1
        result = self.matvec(v, index=self.all_index) if self.indexed else self.matvec(v)
        return result if result.dtype == self.dtype else result.to(self.dtype)

    def products_per_sample(self) -> torch.Tensor:
        return self.partial_products + self.full_calls


def _solve(operator: _Operator, b: torch.Tensor, x0: torch.Tensor | None, tau: float, max_iter: int,
           passes: int, true_residual: bool, breakdown_tol: float, return_basis: bool) -> GMRESResult:
    """The GMRES iteration of :func:`gmres` on validated arguments.

    Per-sample scalars are (B, 1) columns, so that they broadcast against (B, n) vectors
    without reshaping: at batch 1 every tensor operation (~2–5 µs on this CPU) is ~0.5 % of
    the bundled CNN's gradient, so the loop is written to make few of them.
    """
    batch, shape, dtype, device = b.shape[0], b.shape, b.dtype, b.device
    n = b[0].numel()
    b_flat = b.reshape(batch, n)
    x0_flat = torch.zeros_like(b_flat) if x0 is None else x0.reshape(batch, n).to(dtype)
    r0 = b_flat - operator(x0_flat).view(batch, n) if x0 is not None else b_flat.clone()
    r0_finite = torch.isfinite(r0).all(dim=1)
    r0 = torch.where(r0_finite[:, None], r0, torch.zeros_like(r0))
    beta = torch.linalg.vector_norm(r0, dim=1)
    # x0 already solves the system to rounding: treat as β = 0 (a basis built from rounding
    # noise would be meaningless).
    beta = torch.where(beta <= breakdown_tol * torch.finfo(dtype).eps ** 0.5 * torch.linalg.vector_norm(b_flat, dim=1),
                       torch.zeros_like(beta), beta)
    r0 = torch.where((beta == 0)[:, None], torch.zeros_like(r0), r0)
    safe_beta = torch.where(beta > 0, beta, torch.ones_like(beta))
    initial = torch.where(beta == 0, int(BETA_ZERO), int(RUNNING))
    initial = torch.where(r0_finite, initial, int(NONFINITE))
    first_estimate = torch.where(beta > 0, 1.0, 0.0).to(dtype)[:, None, None]  # ‖r̃_0‖/β

    basis = torch.zeros(batch, max_iter + 1, n, dtype=dtype, device=device)
    basis_rows = basis.split(1, dim=1)  # views v_0 … v_M, each (B, 1, n)
    basis_rows[0].copy_((r0 / safe_beta[:, None]).unsqueeze(1))
    # H̄ (Arnoldi) is kept transposed, so that its column j is the contiguous row hess_t[:, j].
    hess_t = torch.zeros(batch, max_iter, max_iter + 1, dtype=dtype, device=device)
    # Q: the product of all Givens rotations so far (identity beyond the current step), kept as
    # Q = (Qᵀ)ᵀ so that its columns j, j+1 (rows of Qᵀ) meet a Hessenberg row without a
    # transpose; R = Qᵀ H̄ is upper triangular and β Qᵀ e1 (Q's first row) is the paper's β q1.
    rotations = torch.eye(max_iter + 1, dtype=dtype, device=device).repeat(batch, 1, 1)
    first_row = rotations[:, :1, :, None].unbind(2)  # views (Qᵀ e1)_i, each (B, 1, 1)
    # Constants as 0-dim tensors (a Python scalar operand costs a conversion per use, ~5 µs),
    # filled on the device (no host-to-device copy, which would synchronise on a GPU).
    constant = partial(torch.full, (), dtype=dtype, device=device)
    zero, inf, tol = constant(0.0), constant(float("inf")), constant(breakdown_tol)
    tau_up = constant(_round_up(tau, dtype))  # estimates stay in the working dtype
    unit = torch.eye(2, dtype=dtype, device=device)
    no_rotation = unit[0]  # (c, s) of the identity
    # (c, s) ↦ (c, −s, s, c) = [[c, −s], [s, c]], the transposed rotation that multiplies Q's columns
    to_rotation = torch.stack((unit[0], -unit[1], unit[1], unit[0]), dim=1)

    # Per step, each (B, 1, 1): running before the step, a finite product, a new basis vector
    # (bool), the Givens estimate ‖r̃_{j+1}‖/β (working dtype); vectors are rows (B, 1, n). Stop
    # reasons and m are read off at the end.
    ran, finite_steps, extended, estimates = [], [], [], []
    true_estimates = [first_estimate]
    dims_so_far = torch.zeros(batch, dtype=torch.int64, device=device)  # only for true_residual
    operator_scale = torch.zeros(batch, 1, 1, dtype=dtype, device=device)
    running = (initial == RUNNING)[:, None, None]
    active_idx = running.nonzero(as_tuple=True)[0]  # the one host sync of this step
    # The bookkeeping creates no tensor that autograd could need: inference mode spares each of
    # its operations the autograd dispatch (measured ~30 % of their cost at batch 1); the operator
    # runs outside it (see _Operator).
    with torch.inference_mode(not torch.is_grad_enabled()):
        for j in range(max_iter):
            if active_idx.numel() == 0:
                break
            w = operator(basis_rows[j], active_idx)
            w_norm = torch.linalg.vector_norm(w, dim=2, keepdim=True)
            # A product with NaN/inf (or a norm that overflows) stops its sample. It and every
            # finished sample go on with w = 0: a zero Hessenberg column, the identity rotation.
            step_ok = running & (w_norm < inf)
            # Running estimate of ‖A‖ per sample: rounding in A v_j is of order eps·‖A‖, so
            # h_{j+1,j} is compared with the largest ‖A v_i‖ seen, not with the current ‖A v_j‖.
            operator_scale = torch.maximum(operator_scale, w_norm)
            w, h_col = _orthogonalize(basis.narrow(1, 0, j + 1), torch.where(step_ok, w, zero), passes)
            h_next = torch.linalg.vector_norm(w, dim=2, keepdim=True)
            h_col = torch.cat((h_col, h_next), dim=2)  # (B, 1, j+2): column j of H̄
            hess_t[:, j: j + 1, : j + 2] = h_col
            # h_{j+1,j} > tol·‖A‖ (hence > 0): a new basis vector; else breakdown (or no step),
            # and the row stays zero (w is finite, so w / inf = 0).
            extends = h_next > operator_scale * tol
            torch.div(w, torch.where(extends, h_next, inf), out=basis_rows[j + 1])

            # Givens QR (paper eq. 14): all earlier rotations at once give rows j, j+1 of Qᵀ H̄ e_j,
            # then the rotation that zeroes h_{j+1,j}.
            columns = rotations[:, : j + 2, j: j + 2]
            pair = torch.bmm(h_col, columns)  # (B, 1, 2)
            radius = torch.linalg.vector_norm(pair, dim=2, keepdim=True)
            cos_sin = torch.where(radius > zero, pair / radius, no_rotation)
            columns.copy_(torch.bmm(columns, (cos_sin @ to_rotation).view(batch, 2, 2)))
            estimate = first_row[j + 1].abs()  # |(β Qᵀ e1)_{j+1}| / β
            ran.append(running)
            finite_steps.append(step_ok)
            extended.append(extends)
            estimates.append(estimate)

            if true_residual:
                dims_so_far += step_ok.view(batch)
                x_j = _assemble(x0_flat, basis, hess_t.mT.contiguous(), rotations.mT.contiguous(), beta, dims_so_far)
                true_res = b_flat.unsqueeze(1) - operator(x_j, active_idx)
                true_estimates.append(torch.linalg.vector_norm(true_res, dim=2, keepdim=True) / safe_beta[:, None, None])

            running = extends & (estimate >= tau_up)
            active_idx = running.nonzero(as_tuple=True)[0]  # the one host sync of this step

    hess, rotations = hess_t.mT.contiguous(), rotations.mT.contiguous()  # H̄ and Qᵀ
    reason, dims = _stop_reasons(initial, ran, finite_steps, extended, estimates, tau)
    solution = _assemble(x0_flat, basis, hess, rotations, beta, dims)
    bad = ~torch.isfinite(solution).all(dim=1)
    solution = torch.where(bad[:, None], x0_flat, solution)
    residual_table = _history([first_estimate] + estimates, dims)
    final_estimate = residual_table.gather(1, dims[:, None]).squeeze(1)

    dims_host = dims.tolist()
    residual_host = residual_table.cpu()
    residuals = [residual_host[i, : dims_host[i] + 1].clone() for i in range(batch)]
    true_residuals = None
    if true_residual:
        true_host = _history(true_estimates, dims).cpu()
        true_residuals = [true_host[i, : dims_host[i] + 1].clone() for i in range(batch)]
    return GMRESResult(
        solution=solution.reshape(shape),
        residuals=residuals,
        true_residuals=true_residuals,
        iterations=dims,
        converged=final_estimate < tau,
        stop_reason=[StopReason(code).label for code in reason.tolist()],
        beta=beta,
        hessenberg=hess,
        matvec_calls=operator.calls,
        operator_samples=operator.samples,
        products_per_sample=operator.products_per_sample(),
        stop_codes=reason,
        basis=basis.reshape((batch, max_iter + 1) + shape[1:]) if return_basis else None,
    )


def _solve_host(operator: _Operator, b: torch.Tensor, x0: torch.Tensor | None, tau: float, max_iter: int,
                passes: int, breakdown_tol: float) -> GMRESResult:
    """:func:`_solve` for one system on the CPU (the Attack Lab's case), its bookkeeping compiled.

    The same algorithm, decisions and records as the batched loop — CGS2 against the basis rows,
    the breakdown test against the largest ‖A v‖ so far, the Givens estimate against τ rounded up
    to the working dtype, the stop reasons in the same order — with one call per Krylov step
    besides the product: :func:`_arnoldi_givens_step`, compiled by numba. At batch 1 every call
    made between two gradients costs several times its price in a tight loop (3.2–3.5× for the ~15
    NumPy calls a step made at commit 950855e, ``bench/measure_cold_steps.py``), so the step is one call.
    The Givens rotations are applied one by one in float64 (the textbook recursion, Saad, Iterative
    Methods, Alg. 6.9) where the batched loop multiplies by their accumulated product; x_m = x0 +
    V_m R_m⁻¹ (β Qᵀ e1)(1:m) is :func:`_host_solution`, with :func:`_assemble`'s zero-pivot guard.
    The operator runs in the caller's grad and inference modes, as the batched loop runs it.
    """
    step, assemble = _host_kernels()
    dtype, shape = b.dtype, b.shape
    n = b[0].numel()
    b_flat = b.detach().reshape(1, n)
    x0_flat = torch.zeros_like(b_flat) if x0 is None else x0.detach().reshape(1, n).to(dtype)
    b_host = b_flat.numpy().reshape(n)
    r0 = b_host - _host(operator.whole(x0_flat.view(shape)), n) if x0 is not None else b_host.copy()
    beta = math.sqrt(r0 @ r0)  # NaN or inf unless r0 is finite (or its norm overflows)
    finite = beta < math.inf or bool(np.isfinite(r0).all())
    if not finite:
        r0[:] = 0
        beta = 0.0
    if beta <= breakdown_tol * torch.finfo(dtype).eps ** 0.5 * math.sqrt(b_host @ b_host):
        beta = 0.0
    initial = RUNNING if beta > 0 else BETA_ZERO
    initial = initial if finite else NONFINITE
    basis_t = torch.empty(max_iter + 1, n, dtype=dtype)  # rows are written before they are read
    basis = basis_t.numpy()  # the same memory: rows go to the operator as tensors without a copy
    rows = basis_t.view((max_iter + 1,) + tuple(shape[1:])).split(1)  # v_0 … v_M as the operator takes them
    if beta > 0:
        np.divide(r0, beta, out=basis[0])
    hess_t = np.zeros((max_iter, max_iter + 1), dtype=basis.dtype)  # row j: column j of H̄
    rotations = np.empty((max_iter, 2))  # (c, s) of step i: mixes entries i and i+1
    r_t = np.empty((max_iter, max_iter))  # row j: column j of R = Qᵀ H̄ (entries 0 … j)
    residual = np.zeros(max_iter + 1)  # (β Qᵀ e1)/β so far: after step j, |entry j+1| is the estimate
    residual[0] = 1.0
    tau_up, scale = _round_up(tau, dtype), 0.0
    estimates = [1.0 if beta > 0 else 0.0]
    dims, last = 0, None  # last: (finite product, new basis vector, estimate) of the last step run
    for j in range(max_iter if initial == RUNNING else 0):
        w = _host(operator.whole(rows[j]), n)
        step_ok, extends, estimate, scale = step(basis, w, j, passes, scale, breakdown_tol, hess_t, rotations, r_t,
                                                 residual)
        estimates.append(estimate)
        dims += step_ok
        last = (step_ok, extends, estimate)
        if not (extends and estimate >= tau_up):
            break
    if last is None:
        reason = initial
    else:
        step_ok, extends, estimate = last
        reason = NONFINITE if not step_ok else BREAKDOWN if not extends else CONVERGED if estimate < tau else MAX_ITER
    solution = x0_flat
    if dims:
        x_m = assemble(basis, r_t, residual, beta, dims, x0_flat.numpy().reshape(n), float(torch.finfo(dtype).tiny))
        if np.isfinite(x_m).all():
            solution = torch.from_numpy(x_m)
    residuals = torch.tensor(estimates[: dims + 1], dtype=torch.float64)
    return GMRESResult(
        solution=solution.reshape(shape), residuals=[residuals], iterations=torch.tensor([dims]),
        converged=torch.tensor([bool(residuals[dims] < tau)]), stop_reason=[StopReason(reason).label],
        beta=torch.tensor([beta], dtype=dtype), hessenberg=torch.from_numpy(np.ascontiguousarray(hess_t.T))[None],
        matvec_calls=operator.calls, operator_samples=operator.samples,
        products_per_sample=operator.products_per_sample(), stop_codes=torch.tensor([int(reason)]))


def _host(product: torch.Tensor, n: int) -> np.ndarray:
    """An operator's output as the host loop's (n,) array: detached first (a matvec that uses
    parameters requiring grad returns a tensor that does; the host loop never differentiates)."""
    return product.detach().numpy().reshape(n)


def _arnoldi_givens_step(basis: np.ndarray, w: np.ndarray, j: int, passes: int, scale: float, tol: float,
                         hess_t: np.ndarray, rotations: np.ndarray, r_t: np.ndarray,
                         residual: np.ndarray) -> tuple[bool, bool, float, float]:
    """Krylov step j of the host loop on the product w = A v_j (n,), compiled by :func:`_host_kernels`.

    CGS with ``passes`` passes against rows 0 … j of ``basis`` (M+1, n), H̄'s column j into row j of
    ``hess_t``, v_{j+1} into row j+1 of ``basis`` when h_{j+1,j} > tol · ``scale`` (the largest ‖A v‖
    so far), then the earlier rotations and a new one applied to that column (row j of ``r_t``,
    ``rotations`` row j, entries j and j+1 of ``residual``). A product with NaN/inf (or an
    overflowing norm) is replaced by 0, as in the batched loop. Returns (finite product, new basis
    vector, the estimate ‖r̃_{j+1}‖/β, the updated scale). Dot products accumulate in float64.
    """
    n = w.shape[0]
    squares = 0.0
    for k in range(n):
        squares += w[k] * w[k]
    w_norm = math.sqrt(squares)
    step_ok = w_norm < math.inf
    if step_ok and w_norm > scale:
        scale = w_norm
    v = np.zeros(n, basis.dtype)
    if step_ok:
        v[:] = w
    coefficients = np.empty(j + 1)
    for _ in range(passes):
        for i in range(j + 1):
            dot = 0.0
            for k in range(n):
                dot += basis[i, k] * v[k]
            coefficients[i] = dot
        for i in range(j + 1):
            for k in range(n):
                v[k] -= coefficients[i] * basis[i, k]
            hess_t[j, i] += coefficients[i]
    squares = 0.0
    for k in range(n):
        squares += v[k] * v[k]
    h_next = math.sqrt(squares)
    hess_t[j, j + 1] = h_next
    extends = h_next > scale * tol
    if extends:
        for k in range(n):
            basis[j + 1, k] = v[k] / h_next
    top = float(hess_t[j, 0])
    for i in range(j):  # rotation i mixes entries i and i+1
        below = float(hess_t[j, i + 1])
        r_t[j, i] = rotations[i, 0] * top + rotations[i, 1] * below
        top = rotations[i, 0] * below - rotations[i, 1] * top
    radius = math.hypot(top, h_next)
    cos, sin = (top / radius, h_next / radius) if radius > 0 else (1.0, 0.0)
    rotations[j, 0], rotations[j, 1] = cos, sin
    r_t[j, j] = radius
    residual[j + 1] = -sin * residual[j]
    residual[j] = cos * residual[j]
    return step_ok, extends, abs(residual[j + 1]), scale


def _host_solution(basis: np.ndarray, r_t: np.ndarray, residual: np.ndarray, beta: float, m: int,
                   x0: np.ndarray, tiny: float) -> np.ndarray:
    """x_m = x0 + V_m γ with R_m γ = β · residual(1:m) by back substitution (``r_t`` row j holds R's
    column j); a pivot of magnitude ≤ ``tiny`` counts as 1, as in :func:`_assemble`. Returns a new
    (n,) array of the basis' dtype. Compiled by :func:`_host_kernels`."""
    gamma = np.empty(m)
    for i in range(m - 1, -1, -1):
        value = beta * residual[i]
        for k in range(i + 1, m):
            value -= r_t[k, i] * gamma[k]
        pivot = r_t[i, i]
        gamma[i] = value / (pivot if abs(pivot) > tiny else 1.0)
    x = x0.copy()
    for i in range(m):
        for k in range(x.shape[0]):
            x[k] += gamma[i] * basis[i, k]
    return x


@functools.cache
def _host_kernels() -> tuple[Callable, Callable]:
    """:func:`_arnoldi_givens_step` and :func:`_host_solution` compiled by numba (written by hand:
    no library has a one-call Arnoldi step). numba is imported here, on the first solve of one
    system on the CPU, not with this module (code that never solves one should not pay for the
    import); the machine code is cached on disk beside this file, so only a machine's first
    process compiles it."""
    from numba import njit

    return njit(cache=True)(_arnoldi_givens_step), njit(cache=True)(_host_solution)


def prepare_host_loop() -> None:
    """Compile (or load from the disk cache) the host loop's kernels for float32 and float64 now,
    so that the first single-image solve of a process (e.g. an app worker's first SOAE) does not
    pay for it."""
    for dtype in (torch.float32, torch.float64):
        gmres(lambda v, index: v, torch.ones(1, 4, dtype=dtype), tau=0.5, max_iter=2)


def _stop_reasons(initial: torch.Tensor, ran: list[torch.Tensor], finite_steps: list[torch.Tensor],
                  extended: list[torch.Tensor], estimates: list[torch.Tensor],
                  tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(stop codes (B,) int64, Krylov dimensions m (B,) int64) from the loop's per-step records.

    A sample's last step decides, in this order: a non-finite product (NONFINITE), no new
    basis vector (BREAKDOWN), the estimate below tau (CONVERGED), else the cap (MAX_ITER).
    Samples that never ran keep their initial code (BETA_ZERO or NONFINITE), m = 0.
    """
    if not ran:
        return initial, torch.zeros_like(initial)
    steps_run = _table(ran).sum(dim=1)
    finite = _table(finite_steps)
    dims = finite.sum(dim=1)  # the finite steps are the first ones of the steps run
    last = (steps_run - 1).clamp_min(0)[:, None]
    converged = _table(estimates).gather(1, last)[:, 0].double() < tau
    reason = torch.where(converged, int(CONVERGED), int(MAX_ITER))
    reason = torch.where(_table(extended).gather(1, last)[:, 0], reason, int(BREAKDOWN))
    reason = torch.where(finite.gather(1, last)[:, 0], reason, int(NONFINITE))
    return torch.where(steps_run > 0, reason, initial), dims


def _table(per_step: list[torch.Tensor]) -> torch.Tensor:
    """(B, steps) table from the loop's per-step (B, 1, 1) records."""
    return torch.cat(per_step, dim=1).flatten(1)


def _history(per_step: list[torch.Tensor], dims: torch.Tensor) -> torch.Tensor:
    """(B, steps+1) float64 table from per-step (B, 1, 1) values; entries after a sample's m are NaN."""
    table = _table(per_step).double()
    positions = torch.arange(table.shape[1], device=table.device)
    return torch.where(positions[None, :] <= dims[:, None], table, float("nan"))


@functools.cache
def _round_up(value: float, dtype: torch.dtype) -> float:
    """The smallest number of ``dtype`` ≥ value: for x of that dtype, x < value exactly when
    x < this number, so comparisons need no conversion to float64."""
    rounded = torch.tensor(value, dtype=dtype)
    if float(rounded) < value:
        rounded = torch.nextafter(rounded, torch.tensor(float("inf"), dtype=dtype))
    return float(rounded)


def _orthogonalize(basis: torch.Tensor, w: torch.Tensor, passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram–Schmidt of the row w (B, 1, n) against the k orthonormal rows of basis
    (B, k, n), repeated ``passes`` times; each pass is two batched vector–matrix products.

    Returns (w with its components along the basis removed (B, 1, n), the coefficients
    h = V w summed over the passes (B, 1, k)). Vectors are kept as rows: measured on this CPU, batched products
    against the basis in its stored layout were 2–3× faster than with column vectors against its
    transpose.
    """
    transposed = basis.mT
    coefficients = torch.bmm(w, transposed)
    w = w - torch.bmm(coefficients, basis)
    for _ in range(passes - 1):
        correction = torch.bmm(w, transposed)
        w = w - torch.bmm(correction, basis)
        coefficients = coefficients + correction
    return w, coefficients


def _assemble(x0: torch.Tensor, basis: torch.Tensor, hess: torch.Tensor, rotations: torch.Tensor,
              beta: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """x_m = x0 + V_m γ with R_m γ = (β Qᵀ e1)(1:m) solved per sample (paper eq. 13), R = Qᵀ H̄.

    Samples with m < M get identity rows/columns beyond m, so one batched triangular solve
    serves every sample.
    """
    batch, max_iter = hess.shape[0], hess.shape[2]
    positions = torch.arange(max_iter, device=x0.device)
    used = positions[None, :] < dims[:, None]  # (B, M)
    square = torch.bmm(rotations, hess)[:, :max_iter, :max_iter]  # R: upper triangular to rounding
    mask2d = used[:, :, None] & used[:, None, :]
    eye = torch.eye(max_iter, dtype=x0.dtype, device=x0.device).expand(batch, -1, -1)
    system = torch.where(mask2d, square, eye)
    # A zero diagonal inside the used block (singular R) would give inf: guard it.
    diag = torch.diagonal(system, dim1=1, dim2=2)
    tiny = torch.finfo(x0.dtype).tiny
    fixed_diag = torch.where(diag.abs() > tiny, diag, torch.full_like(diag, 1.0))
    system = system - torch.diag_embed(diag) + torch.diag_embed(fixed_diag)
    rhs = beta[:, None] * rotations[:, :max_iter, 0]
    target = torch.where(used, rhs, torch.zeros_like(rhs))
    gamma = torch.linalg.solve_triangular(system, target[:, :, None], upper=True).squeeze(2)
    gamma = torch.where(used, gamma, torch.zeros_like(gamma))
    return x0 + torch.einsum("bm,bmn->bn", gamma, basis[:, :max_iter])
