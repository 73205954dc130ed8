"""Batched GMRES against dense references over a registry of matrix cases (scipy-style)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from soae_core import krylov
from soae_core.krylov import BETA_ZERO, BREAKDOWN, CONVERGED, MAX_ITER, NONFINITE, STOP_REASONS, StopReason, gmres

# Tolerance table per dtype (relative error of the solution against numpy's dense solve).
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
DIM = 24


def _spd(gen: torch.Generator, batch: int) -> torch.Tensor:
    a = torch.randn(batch, DIM, DIM, generator=gen, dtype=torch.float64)
    return a @ a.transpose(1, 2) / DIM + torch.eye(DIM, dtype=torch.float64)


def _symmetric_indefinite(gen: torch.Generator, batch: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(batch, DIM, DIM, generator=gen, dtype=torch.float64))
    eig = torch.linspace(-3.0, 3.0, DIM, dtype=torch.float64)
    eig = torch.where(eig.abs() < 0.5, eig.sign() * 0.5 + (eig == 0) * 0.5, eig)
    return q @ torch.diag_embed(eig.expand(batch, DIM)) @ q.transpose(1, 2)


def _nonsymmetric(gen: torch.Generator, batch: int) -> torch.Tensor:
    a = torch.randn(batch, DIM, DIM, generator=gen, dtype=torch.float64) / DIM ** 0.5
    return a + 2.0 * torch.eye(DIM, dtype=torch.float64)


CASES = {"spd": _spd, "symmetric_indefinite": _symmetric_indefinite, "nonsymmetric": _nonsymmetric}


def _matvec(matrices: torch.Tensor):
    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bj->bi", matrices[index].to(v.dtype), v)
    return matvec


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_solution_matches_dense_reference(case: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    matrices = CASES[case](gen, 3)
    b = torch.randn(3, DIM, generator=gen, dtype=torch.float64)
    tau = 1e-12 if dtype == torch.float64 else 1e-6
    result = gmres(_matvec(matrices.to(dtype)), b.to(dtype), tau=tau, max_iter=DIM)
    reference = np.linalg.solve(matrices.numpy(), b.numpy()[..., None])[..., 0]
    error = np.linalg.norm(result.solution.double().numpy() - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert error.max() < TOL[dtype] * 10
    assert result.converged.all()
    assert result.solution.shape == b.shape and result.solution.dtype == dtype


def _psd_of_rank(gen: torch.Generator, batch: int, rank: int, spread: float) -> torch.Tensor:
    """Q diag(λ) Qᵀ with orthonormal Q (DIM × rank), λ log-spaced over [√10/spread, √10].

    (No eigenvalue equals 1: with x0 = b, r0 = b − Hb has no component along such an
    eigenvector and the Krylov space would be one dimension smaller.)"""
    q, _ = torch.linalg.qr(torch.randn(batch, DIM, rank, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0.5, 0.5 - np.log10(spread), rank, dtype=torch.float64)
    return q @ torch.diag_embed(eig.expand(batch, rank)) @ q.transpose(1, 2)


@pytest.mark.parametrize("spread", [3.0, 1e3])
@pytest.mark.parametrize("rank", [1, 4, 9])
def test_singular_consistent_psd_stops_at_rank_by_breakdown(rank: int, spread: float) -> None:
    """Like the input Hessian of a ReLU net: PSD, rank k, b in the range → breakdown at m = k."""
    gen = torch.Generator().manual_seed(rank)
    matrices = _psd_of_rank(gen, 4, rank, spread)
    b = torch.einsum("bij,bj->bi", matrices, torch.randn(4, DIM, generator=gen, dtype=torch.float64))
    result = gmres(_matvec(matrices), b, x0=b, tau=1e-13, max_iter=DIM)
    assert result.iterations.tolist() == [rank] * 4
    assert result.stop_reason == ["breakdown"] * 4
    assert torch.isfinite(result.solution).all()
    residual = torch.einsum("bij,bj->bi", matrices, result.solution) - b
    assert (residual.norm(dim=1) / b.norm(dim=1)).max() < TOL[torch.float64] * 10
    assert result.converged.all()


@pytest.mark.parametrize("rank", [1, 4, 9])
def test_singular_consistent_psd_float32_stops_near_rank_without_nan(rank: int) -> None:
    """float32: the same systems end by breakdown or convergence within m ≤ k + 1, no NaN.

    Measured: with clustered spectra the float32 Arnoldi chain reaches τ one step before k,
    or rounding keeps h_{k+1,k} above √eps·‖H‖ (e.g. 37 of 60 systems broke down exactly at k
    for spread 3, 58 of 60 for spread 30) — float32 cannot tell these apart, float64 can.
    """
    gen = torch.Generator().manual_seed(rank)
    matrices = _psd_of_rank(gen, 4, rank, 30.0)
    b = torch.einsum("bij,bj->bi", matrices, torch.randn(4, DIM, generator=gen, dtype=torch.float64))
    result = gmres(_matvec(matrices.float()), b.float(), x0=b.float(), tau=1e-5, max_iter=DIM)
    assert set(result.stop_reason) <= {"breakdown", "converged"}
    assert int(result.iterations.max()) <= rank + 1
    assert torch.isfinite(result.solution).all()
    residual = torch.einsum("bij,bj->bi", matrices, result.solution.double()) - b
    assert (residual.norm(dim=1) / b.norm(dim=1)).max() < TOL[torch.float32] * 10


def _three_speeds() -> tuple[torch.Tensor, torch.Tensor]:
    """Three SPD systems (3, DIM, DIM) and right-hand sides (3, DIM), float64, whose different
    spectra make GMRES stop at three different steps."""
    gen = torch.Generator().manual_seed(3)
    scales = torch.tensor([0.01, 1.0, 10.0], dtype=torch.float64)
    a = torch.randn(3, DIM, DIM, generator=gen, dtype=torch.float64)
    matrices = torch.eye(DIM, dtype=torch.float64) + scales[:, None, None] * a @ a.transpose(1, 2) / DIM
    return matrices, torch.randn(3, DIM, generator=gen, dtype=torch.float64)


def test_batched_equals_sample_by_sample_and_samples_stop_at_different_j() -> None:
    matrices, b = _three_speeds()
    calls = []

    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        calls.append(index.tolist())
        return torch.einsum("bij,bj->bi", matrices[index], v)

    batched = gmres(matvec, b, tau=1e-8, max_iter=DIM)
    assert len(set(batched.iterations.tolist())) == 3, "the cases were built to stop at different j"
    # Finished samples cost no more operator work: the active set only shrinks.
    assert all(set(later) <= set(earlier) for earlier, later in zip(calls, calls[1:], strict=False))
    assert batched.operator_samples == int(batched.iterations.sum())
    for i in range(3):
        single = gmres(_matvec(matrices[i:i + 1]), b[i:i + 1], tau=1e-8, max_iter=DIM)
        assert int(single.iterations[0]) == int(batched.iterations[i])
        torch.testing.assert_close(single.solution[0], batched.solution[i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(single.residuals[0], batched.residuals[i], rtol=1e-12, atol=1e-14)
    # A plain callable (no ``index``) gets all samples every step; the finished ones' products are ignored.
    plain = gmres(lambda v: torch.einsum("bij,bj->bi", matrices, v), b, tau=1e-8, max_iter=DIM)
    assert plain.iterations.tolist() == batched.iterations.tolist() and plain.stop_reason == batched.stop_reason
    assert plain.products_per_sample.tolist() == [int(batched.iterations.max())] * 3
    torch.testing.assert_close(plain.solution, batched.solution, rtol=1e-12, atol=1e-12)


def test_inference_mode_of_the_loop_stays_inside_the_solver() -> None:
    """The loop's bookkeeping runs in inference mode, the operator in the caller's mode: the
    result holds ordinary tensors (in-place edits allowed), and a caller in inference mode
    gets the same solve, shrinking active set included."""
    matrices, b = _three_speeds()
    modes = []

    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        modes.append(torch.is_inference_mode_enabled())
        return torch.einsum("bij,bj->bi", matrices[index], v)

    normal = gmres(matvec, b, tau=1e-8, max_iter=DIM, true_residual=True)
    assert not any(modes), "the operator must run in the caller's mode, not the loop's"
    for value in (normal.solution, normal.hessenberg, normal.beta, normal.stop_codes, normal.iterations,
                  normal.products_per_sample, *normal.residuals, *normal.true_residuals):
        assert not value.is_inference()
    normal.solution.mul_(1.0)  # would raise for an inference tensor
    modes.clear()
    with torch.inference_mode():
        inside = gmres(matvec, b, tau=1e-8, max_iter=DIM, true_residual=True)
    assert all(modes) and len(set(inside.iterations.tolist())) == 3
    assert inside.iterations.tolist() == normal.iterations.tolist()
    assert torch.equal(inside.solution, normal.solution) and torch.equal(inside.hessenberg, normal.hessenberg)


@pytest.mark.parametrize("case", sorted(CASES))
def test_givens_estimate_equals_true_residual(case: str) -> None:
    gen = torch.Generator().manual_seed(5)
    matrices = CASES[case](gen, 2)
    b = torch.randn(2, DIM, generator=gen, dtype=torch.float64)
    x0 = torch.randn(2, DIM, generator=gen, dtype=torch.float64)
    result = gmres(_matvec(matrices), b, x0=x0, tau=1e-10, max_iter=DIM, true_residual=True)
    for estimate, true in zip(result.residuals, result.true_residuals, strict=False):
        assert float(estimate[0]) == 1.0 and float(true[0]) == 1.0
        assert len(estimate) == len(true) >= 3
        # relative agreement ~1e-8 (plus a floor for residuals near machine precision)
        np.testing.assert_allclose(estimate.numpy(), true.numpy(), rtol=1e-8, atol=1e-13)
        assert (np.diff(estimate.numpy()) <= 1e-12).all(), "GMRES residuals never increase"


def test_residual_history_shape_and_reasons() -> None:
    gen = torch.Generator().manual_seed(6)
    matrices = _nonsymmetric(gen, 2)
    b = torch.randn(2, DIM, generator=gen, dtype=torch.float64)
    result = gmres(_matvec(matrices), b, tau=1e-3, max_iter=3)
    assert result.stop_reason == ["max_iter", "max_iter"]
    assert result.iterations.tolist() == [3, 3]
    assert all(len(r) == 4 and float(r[0]) == 1.0 for r in result.residuals)
    assert not result.converged.any()
    assert set(result.stop_reason) <= set(STOP_REASONS)
    assert result.hessenberg.shape == (2, 4, 3)
    assert result.ritz_values(0).shape == (3,)


def test_ritz_values_of_a_full_solve_are_the_eigenvalues() -> None:
    gen = torch.Generator().manual_seed(7)
    matrices = _spd(gen, 1)
    b = torch.randn(1, DIM, generator=gen, dtype=torch.float64)
    result = gmres(_matvec(matrices), b, tau=1e-30, max_iter=DIM, breakdown_tol=1e-30, reorthogonalize=True)
    assert int(result.iterations[0]) == DIM
    ritz = torch.sort(result.ritz_values(0).real).values
    eig = torch.linalg.eigvalsh(matrices[0])
    torch.testing.assert_close(ritz, eig, rtol=1e-6, atol=1e-8)


def test_zero_rhs_gives_beta_zero_and_no_nan() -> None:
    matrices = torch.eye(DIM, dtype=torch.float64).expand(2, DIM, DIM)
    b = torch.zeros(2, DIM, dtype=torch.float64)
    b[1, 0] = 1.0
    result = gmres(_matvec(matrices), b, tau=1e-6, max_iter=5)
    assert result.stop_reason[0] == "beta_zero"
    assert int(result.iterations[0]) == 0
    assert torch.equal(result.solution[0], torch.zeros(DIM, dtype=torch.float64))
    assert bool(result.converged[0])
    assert result.stop_reason[1] in ("breakdown", "converged")
    torch.testing.assert_close(result.solution[1], b[1])


def test_nonfinite_operator_output_stops_that_sample_only() -> None:
    gen = torch.Generator().manual_seed(8)
    matrices = _spd(gen, 2)
    b = torch.randn(2, DIM, generator=gen, dtype=torch.float64)
    step = {"n": 0}

    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        step["n"] += 1
        out = torch.einsum("bij,bj->bi", matrices[index], v)
        if step["n"] == 3:
            out[index == 0] = float("nan")
        return out

    result = gmres(matvec, b, tau=1e-10, max_iter=DIM)
    assert result.stop_reason[0] == "nonfinite"
    assert int(result.iterations[0]) == 2
    assert torch.isfinite(result.solution).all()
    assert result.stop_reason[1] == "converged"
    torch.testing.assert_close(result.solution[1], torch.linalg.solve(matrices[1], b[1]), rtol=1e-8, atol=1e-10)


def test_reorthogonalization_gives_same_solution() -> None:
    gen = torch.Generator().manual_seed(9)
    matrices = _nonsymmetric(gen, 2)
    b = torch.randn(2, DIM, generator=gen, dtype=torch.float64)
    plain = gmres(_matvec(matrices), b, tau=1e-10, max_iter=DIM)
    twice = gmres(_matvec(matrices), b, tau=1e-10, max_iter=DIM, reorthogonalize=True)
    torch.testing.assert_close(plain.solution, twice.solution, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("reorthogonalize", [False, True])
def test_basis_stays_orthonormal_over_100_steps_on_ill_conditioned_systems(reorthogonalize: bool) -> None:
    """Classical Gram–Schmidt twice (thrice with ``reorthogonalize``) keeps ‖VᵀV − I‖ at rounding.

    A = Q diag(σ) Pᵀ and A = X diag(σ) X⁻¹ (non-normal), σ log-spaced over [1e-10, 1], n = 200,
    so 100 steps never break down. Measured on these two: one classical pass loses orthogonality
    to 2e-6 and 1.0; modified Gram–Schmidt (the solver before) to 4e-12 and 2e-10; CGS2 to 9e-16.
    """
    n = 200
    gen = torch.Generator().manual_seed(12)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    p, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    sigma = torch.diag(torch.logspace(0, -10, n, dtype=torch.float64))
    x = torch.eye(n, dtype=torch.float64) + 0.5 * torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5
    matrices = torch.stack([q @ sigma @ p.T, x @ sigma @ torch.linalg.inv(x)])
    b = torch.randn(2, n, generator=gen, dtype=torch.float64)
    result = gmres(_matvec(matrices), b, tau=1e-30, max_iter=100, breakdown_tol=1e-30,
                   reorthogonalize=reorthogonalize, return_basis=True)
    assert result.iterations.tolist() == [100, 100] and result.stop_reason == ["max_iter"] * 2
    gram = result.basis @ result.basis.transpose(1, 2)
    assert (gram - torch.eye(101, dtype=torch.float64)).abs().max() <= 1e-12
    # The Arnoldi relation A V_m = V_{m+1} H̄ holds with that basis.
    applied = torch.einsum("bij,bmj->bmi", matrices, result.basis[:, :100])
    torch.testing.assert_close(applied, torch.einsum("bkn,bkm->bmn", result.basis, result.hessenberg),
                               rtol=0, atol=1e-12)


def test_stop_reasons_are_named_constants_with_stable_codes() -> None:
    assert [int(code) for code in (CONVERGED, BREAKDOWN, MAX_ITER, BETA_ZERO, NONFINITE)] == [1, 2, 3, 4, 5]
    assert STOP_REASONS == ("converged", "breakdown", "max_iter", "beta_zero", "nonfinite")
    assert all(StopReason(code).label == label for code, label in enumerate(STOP_REASONS, start=1))
    assert set(krylov.__all__) >= {"StopReason", "CONVERGED", "BREAKDOWN", "MAX_ITER", "BETA_ZERO", "NONFINITE"}
    # One system per reason; the codes on the device match the labels.
    matrices = torch.stack([torch.eye(4, dtype=torch.float64), 2 * torch.eye(4, dtype=torch.float64),
                            torch.diag(torch.arange(1.0, 5.0, dtype=torch.float64)), torch.eye(4, dtype=torch.float64)])
    b = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [1.0, 1, 1, 1], [1.0, 2, 0, 0]], dtype=torch.float64)

    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("bij,bj->bi", matrices[index], v)
        return torch.where((index == 3)[:, None], float("nan"), out)

    result = gmres(matvec, b, tau=1e-20, max_iter=2, breakdown_tol=1e-10)
    assert result.stop_reason == ["breakdown", "beta_zero", "max_iter", "nonfinite"]
    assert result.stop_codes.tolist() == [BREAKDOWN, BETA_ZERO, MAX_ITER, NONFINITE]
    converged = gmres(_matvec(matrices[2:3]), b[2:3], tau=0.5, max_iter=4)  # ‖r_1‖/β = 0.41
    assert converged.stop_codes.tolist() == [CONVERGED] and converged.stop_reason == ["converged"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [1e-3, 0.7, 0.1, 1e-6])
def test_tau_rounded_up_to_the_working_dtype_keeps_the_comparison_exact(value: float, dtype: torch.dtype) -> None:
    """Estimates are compared with tau in their own dtype: e < tau ⇔ e < the rounded-up tau."""
    up = torch.tensor(krylov._round_up(value, dtype), dtype=dtype)
    below = torch.nextafter(up, torch.tensor(0.0, dtype=dtype))
    assert float(up) == krylov._round_up(value, dtype) >= value and float(below) < value


class _HostSyncCounter(torch.overrides.TorchFunctionMode):
    """Counts calls that copy a device value to the host (each a synchronisation on a GPU)."""

    names = {"nonzero", "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.names
        return func(*args, **(kwargs or {}))


def test_at_most_one_host_sync_per_krylov_step_counted_on_cpu() -> None:
    """The CPU twin of the CUDA test below: host-copying calls, counted on two solves of
    different lengths (the per-solve constant cancels)."""
    gen = torch.Generator().manual_seed(13)
    matrices = _nonsymmetric(gen, 3)
    b = torch.randn(3, DIM, generator=gen, dtype=torch.float64)
    counts = {}
    for steps in (5, 15):
        with _HostSyncCounter() as counter:
            result = gmres(_matvec(matrices), b, tau=1e-30, max_iter=steps, true_residual=True)
        assert result.iterations.tolist() == [steps] * 3
        counts[steps] = counter.count
    assert (counts[15] - counts[5]) / 10 <= 1


@pytest.mark.parametrize("kwargs, word", [
    ({"tau": 0.0}, "tau"), ({"tau": 1.0}, "tau"), ({"tau": float("nan")}, "tau"),
    ({"max_iter": 0}, "max_iter"), ({"max_iter": 2.5}, "max_iter"),
    ({"x0": torch.zeros(3)}, "x0"),
])
def test_bad_arguments_raise_value_error(kwargs: dict, word: str) -> None:
    b = torch.ones(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=word):
        gmres(lambda v: v, b, **kwargs)


def test_nan_rhs_is_refused() -> None:
    b = torch.ones(2, 4)
    b[0, 0] = float("nan")
    with pytest.raises(ValueError, match="b"):
        gmres(lambda v: v, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (checked on GPU machines only)")
def test_runs_on_cuda() -> None:
    gen = torch.Generator().manual_seed(10)
    matrices = _spd(gen, 2).cuda()
    b = torch.randn(2, DIM, generator=gen, dtype=torch.float64).cuda()
    result = gmres(_matvec(matrices), b, tau=1e-10, max_iter=DIM)
    assert result.solution.device.type == "cuda"
    torch.testing.assert_close(result.solution, torch.linalg.solve(matrices, b), rtol=1e-8, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (checked on GPU machines only)")
def test_at_most_one_host_sync_per_krylov_step_on_cuda() -> None:
    import warnings

    gen = torch.Generator().manual_seed(11)
    matrices = _spd(gen, 4).cuda()
    b = torch.randn(4, DIM, generator=gen, dtype=torch.float64).cuda()
    matvec = _matvec(matrices)
    gmres(matvec, b, tau=1e-10, max_iter=DIM)  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = gmres(matvec, b, tau=1e-10, max_iter=DIM)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    steps = int(result.iterations.max())
    # one per step, plus a constant number for argument checks and the final host copies
    assert len(caught) <= steps + 8


# One system on the CPU runs the host loop (krylov._solve_host, NumPy bookkeeping); the batched
# loop (krylov._solve) must give the same records for it. Each case: (matrix (DIM, DIM) float64,
# b (DIM,), x0 or None, tau, max_iter, a step whose product turns NaN or None).
def _host_cases() -> dict[str, tuple]:
    gen = torch.Generator().manual_seed(21)
    cases = {name: (make(gen, 1)[0], torch.randn(DIM, generator=gen, dtype=torch.float64), None, 1e-10, DIM, None)
             for name, make in CASES.items()}
    singular = _psd_of_rank(gen, 1, 4, 3.0)[0]
    b = singular @ torch.randn(DIM, generator=gen, dtype=torch.float64)
    cases["breakdown, x0 = b"] = (singular, b, b, 1e-13, DIM, None)
    cases["max_iter"] = (_nonsymmetric(gen, 1)[0], torch.randn(DIM, generator=gen, dtype=torch.float64), None, 1e-12, 5,
                         None)
    cases["beta_zero"] = (torch.eye(DIM, dtype=torch.float64), torch.zeros(DIM, dtype=torch.float64), None, 1e-6, 5, None)
    cases["nonfinite at step 3"] = (_spd(gen, 1)[0], torch.randn(DIM, generator=gen, dtype=torch.float64), None, 1e-10,
                                    DIM, 3)
    return cases


HOST_CASES = _host_cases()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(HOST_CASES))
def test_one_system_on_the_cpu_gives_what_the_batched_loop_gives(case: str, dtype: torch.dtype) -> None:
    matrix, b, x0, tau, max_iter, nan_at = HOST_CASES[case]
    matrix, b = matrix.to(dtype), b.to(dtype)[None]
    x0 = None if x0 is None else x0.to(dtype)[None]

    def solve(loop):
        calls = {"n": 0}

        def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            out = v @ matrix.T
            return out.fill_(float("nan")) if calls["n"] == nan_at else out

        operator = krylov._Operator(matvec, b, grad_enabled=False)
        tol = krylov._default_breakdown_tol(dtype)
        if loop == "host":
            return krylov._solve_host(operator, b, x0, tau, max_iter, 2, tol)
        return krylov._solve(operator, b, x0, tau, max_iter, 2, False, tol, False)

    host, batched = solve("host"), solve("batched")
    assert (host.stop_reason, host.iterations.tolist(), host.converged.tolist()) == \
        (batched.stop_reason, batched.iterations.tolist(), batched.converged.tolist())
    assert torch.equal(host.stop_codes, batched.stop_codes)
    assert (host.matvec_calls, host.operator_samples, host.products_per_sample.tolist()) == \
        (batched.matvec_calls, batched.operator_samples, batched.products_per_sample.tolist())
    tolerance = {"rtol": TOL[dtype], "atol": TOL[dtype]}
    torch.testing.assert_close(host.solution, batched.solution, **tolerance)
    torch.testing.assert_close(host.residuals[0], batched.residuals[0], **tolerance)
    torch.testing.assert_close(host.hessenberg, batched.hessenberg, **tolerance)
    torch.testing.assert_close(host.beta, batched.beta, **tolerance)
    assert host.solution.dtype == dtype and torch.isfinite(host.solution).all()
    m = int(host.iterations[0])
    if m:
        ritz = [np.sort_complex(result.ritz_values(0).numpy()) for result in (host, batched)]  # eigvals' order is arbitrary
        np.testing.assert_allclose(*ritz, rtol=1e-3, atol=1e-6)


def test_gmres_takes_the_host_loop_for_one_system_on_the_cpu_and_the_batched_loop_otherwise(monkeypatch) -> None:
    taken = []
    for name in ("_solve", "_solve_host"):
        original = getattr(krylov, name)
        monkeypatch.setattr(krylov, name, lambda *args, _f=original, _n=name: taken.append(_n) or _f(*args))
    matrices, b = _three_speeds()
    gmres(_matvec(matrices[:1]), b[:1], tau=1e-8, max_iter=DIM)
    gmres(_matvec(matrices), b, tau=1e-8, max_iter=DIM)
    gmres(_matvec(matrices[:1]), b[:1], tau=1e-8, max_iter=DIM, true_residual=True)  # diagnostics: the batched loop
    assert taken == ["_solve_host", "_solve", "_solve"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_host_loop_leaves_the_operators_output_and_the_right_hand_side_alone(dtype: torch.dtype) -> None:
    """The host loop works in place on its own basis; a matvec that hands back tensors it keeps
    (a cache, a buffer) must find them as it left them, and b and x0 too."""
    gen = torch.Generator().manual_seed(5)
    matrix = _spd(gen, 1)[0].to(dtype)
    b = torch.randn(1, DIM, generator=gen, dtype=torch.float64).to(dtype)
    x0 = torch.randn(1, DIM, generator=gen, dtype=torch.float64).to(dtype)
    kept = []

    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = v @ matrix.T
        kept.append((out, out.clone()))
        return out

    b_before, x0_before = b.clone(), x0.clone()
    result = gmres(matvec, b, x0=x0, tau=1e-8, max_iter=DIM)
    assert int(result.iterations[0]) > 2
    assert all(torch.equal(out, copy) for out, copy in kept)
    assert torch.equal(b, b_before) and torch.equal(x0, x0_before)


def _callables_with_and_without_index() -> dict[str, tuple]:
    def plain(v): return v
    def with_index(v, index): return v
    def keyword_only(v, *, index=None): return v
    def star_args(v, *index): return v
    def star_kwargs(v, **index): return v
    def local_named_index(v):
        index = 0
        return v + index

    @functools.wraps(with_index)
    def wrapper(*args, **kwargs): return with_index(*args, **kwargs)

    class Operator:
        def __call__(self, v, index): return v

    return {"plain": (plain, False), "with index": (with_index, True), "keyword-only": (keyword_only, True),
            "*index": (star_args, True), "**index": (star_kwargs, True), "a local named index": (local_named_index, False),
            "functools.wraps": (wrapper, True), "partial": (functools.partial(with_index), True),
            "callable object": (Operator(), True), "lambda": (lambda v, index: v, True), "builtin": (torch.neg, False)}


@pytest.mark.parametrize("name", sorted(_callables_with_and_without_index()))
def test_takes_index_reads_a_matvecs_parameters_as_inspect_does(name: str) -> None:
    matvec, expected = _callables_with_and_without_index()[name]
    assert krylov._takes_index(matvec) is expected
    assert krylov._takes_index(matvec) is expected  # a second time (from the cache for plain functions)


def test_one_system_on_the_cpu_takes_an_operator_whose_output_requires_grad() -> None:
    """A matvec built on parameters that require grad (e.g. a layer of a trainable model) hands
    back tensors that require grad; the host loop detaches them and agrees with the batched loop."""
    gen = torch.Generator().manual_seed(8)
    matrix = _spd(gen, 1)[0].requires_grad_(True)
    b = torch.randn(2, DIM, generator=gen, dtype=torch.float64)

    def matvec(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return v @ matrix.T

    alone = gmres(matvec, b[:1], tau=1e-10, max_iter=DIM)
    batched = gmres(matvec, b, tau=1e-10, max_iter=DIM)
    assert alone.stop_reason == batched.stop_reason[:1]
    torch.testing.assert_close(alone.solution, batched.solution[:1].detach(), rtol=TOL[torch.float64],
                               atol=TOL[torch.float64])
