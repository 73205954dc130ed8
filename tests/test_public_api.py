"""The public names other tools import (a contract): they must exist with these call shapes."""

from __future__ import annotations

import torch
from conftest import tiny_cnn


def test_gmres_contract() -> None:
    from soae_core.krylov import gmres

    b = torch.randn(3, 5, dtype=torch.float64)
    result = gmres(lambda v: 2.0 * v, b, x0=None, tau=1e-3, max_iter=50)
    assert result.solution.shape == b.shape
    torch.testing.assert_close(result.solution, b / 2)
    assert len(result.residuals) == 3 and all(float(r[0]) == 1.0 for r in result.residuals)
    assert result.iterations.dtype == torch.int64 and result.iterations.shape == (3,)
    assert result.converged.dtype == torch.bool and bool(result.converged.all())


def test_attack_contract() -> None:
    from soae_core.attacks import ASOD, FGSM, PGD, SOAE, AutoAttack

    model = tiny_cnn(dtype=torch.float32)
    x = torch.rand(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    for hvp in ("finite_difference", "exact"):
        attack = SOAE(model, eps=8 / 255, eta=1e-5, tau=1e-3, steps=4, alpha=None, hvp=hvp, max_krylov=10)
        result = attack(x, y)
        assert result.adv.shape == x.shape and isinstance(result.grad_evals, int) and result.trace is not None
    for attack_class in (FGSM, PGD, AutoAttack, ASOD):
        result = attack_class(model, eps=8 / 255)(x, y)
        assert result.adv.shape == x.shape
