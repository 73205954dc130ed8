"""The Krylov Inspector's computation: residual histories, Ritz values, FD accuracy, τ → m."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from soae_core.analysis.krylov_inspector import (
    KrylovRecord,
    best_error,
    class_margin_gains,
    comparison_models,
    error_at,
    fd_accuracy_sweep,
    hessian_spectrum,
    krylov_history,
    m_for_tau,
    tau_to_m_table,
)
from soae_core.analysis.settings import DEFAULT_SETTINGS
from soae_core.attacks.soae import SOAE
from soae_core.models import build_model, get_model_info


def _frozen(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    return build_model(name).eval().requires_grad_(False).to(dtype)


@pytest.fixture(scope="module")
def relu_model():
    return _frozen("fmnist-cnn-std")


@pytest.fixture(scope="module")
def image():
    # Random pixels: no exact zeros, so no max-pool ties (REPRODUCTION.md: ties make ∇L jump).
    return torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(2))


def test_history_has_one_record_per_outer_iteration(relu_model, image):
    settings = dataclasses.replace(DEFAULT_SETTINGS, steps=2, hvp="exact")
    records = krylov_history(relu_model, image, 4, settings)
    assert [r.iteration for r in records] == [1, 2]
    for record in records:
        assert record.residuals[0] == 1.0
        assert len(record.residuals) == record.m + 1
        assert record.true_residuals is not None and len(record.true_residuals) == record.m + 1
        assert record.ritz_values.shape == (record.m,)
        # Exact products: the Givens estimate and the operator-evaluated residual agree.
        np.testing.assert_allclose(record.true_residuals[1:], record.residuals[1:], rtol=0.05, atol=1e-4)


def test_relu_hessian_has_rank_below_the_number_of_classes(relu_model, image):
    spectrum = hessian_spectrum(copy.deepcopy(relu_model).double(), image.double(), 4, max_dim=40)
    assert spectrum.stop_reason == "breakdown"
    assert 1 <= spectrum.m <= spectrum.num_classes - 1
    scale = np.abs(spectrum.ritz_values).max()
    assert spectrum.ritz_values.min() > -1e-6 * scale  # positive semidefinite
    assert spectrum.max_imaginary <= 1e-6 * scale  # symmetric: real Ritz values


def test_smooth_hessian_is_not_low_rank(image):
    smooth = _frozen("fmnist-cnn-smooth-std", torch.float64)
    spectrum = hessian_spectrum(smooth, image.double(), 4, max_dim=20)
    assert spectrum.m > spectrum.num_classes - 1


def test_fd_accuracy_shows_truncation_and_round_off(relu_model, image):
    etas = (1e-2, 1e-4, 1e-6, 1e-9)
    table = fd_accuracy_sweep(relu_model, copy.deepcopy(relu_model).double(), image, 4, etas=etas)
    assert len(table) == len(etas) * 2 * 2
    error = table.set_index(["dtype", "scheme", "eta"])["relative_error"]
    # float32 cannot resolve a step of 1e-9 at pixel values ~0.5: the difference is exactly 0.
    assert error["float32", "forward", 1e-9] == pytest.approx(1.0)
    # float64 reaches far better accuracy than float32 at its best η.
    assert error["float64"].min() < 1e-5
    assert error["float64"].min() < 1e-2 * error["float32"].min()
    # What the page reads from the table: SOAE's own product (forward, float32) at an η, the best float64 error.
    assert error_at(table, 1e-4) == error["float32", "forward", 1e-4]
    assert error_at(table, 1e-3) is None  # not in the sweep
    assert best_error(table, "float64") == error["float64"].min()


def test_comparison_models_put_the_other_kind_first():
    std, smooth, pgd = (get_model_info(n) for n in ("fmnist-cnn-std", "fmnist-cnn-smooth-std", "fmnist-cnn-pgd"))
    available = [dataclasses.replace(info, available=True) for info in (pgd, std, smooth)]
    names = [m.name for m in comparison_models(available[1], available)]
    assert names == ["fmnist-cnn-smooth-std", "fmnist-cnn-pgd"]  # smooth (the other kind) first, never itself


def test_m_for_tau_reads_the_prefix_of_a_longer_run():
    record = KrylovRecord(iteration=1, residuals=np.array([1.0, 0.5, 0.05, 0.004, 1e-5]), true_residuals=None,
                          m=4, stop_reason="breakdown", ritz_values=np.zeros(4))
    assert m_for_tau(record, 0.1) == (2, "converged")
    assert m_for_tau(record, 1e-2) == (3, "converged")
    assert m_for_tau(record, 1e-3) == (4, "breakdown")  # breakdown wins at the step it happens
    assert m_for_tau(record, 1e-7) == (4, "breakdown")
    capped = dataclasses.replace(record, stop_reason="max_iter")
    assert m_for_tau(capped, 1e-3) == (4, "converged")
    assert m_for_tau(capped, 1e-7) == (4, "max_iter")
    with pytest.raises(ValueError, match="tau"):
        m_for_tau(record, 0.0)


def test_tau_table_matches_direct_runs(relu_model, image):
    taus = (1e-1, 1e-3, 1e-6)
    table = tau_to_m_table(relu_model, image, 4, DEFAULT_SETTINGS, taus=taus, max_dim=40)
    assert list(table.index) == sorted(taus, reverse=True)
    for tau in taus:
        for mode, column in (("exact", "m (exact)"), ("finite_difference", "m (finite difference)")):
            attack = SOAE(relu_model, tau=tau, max_krylov=40, hvp=mode, eta=DEFAULT_SETTINGS.eta)
            result = attack.direction(image, torch.tensor([4])).krylov
            assert table.loc[tau, column] == int(result.iterations[0]), (mode, tau)
    assert (np.diff(table["m (exact)"].to_numpy()) >= 0).all()  # smaller τ never needs fewer steps


def _jacobian_gain(model, image: torch.Tensor, label: int, delta: torch.Tensor) -> torch.Tensor:
    """(J_k − J_y)·δ for every class k, with the full Jacobian taken by torch.autograd.functional (by hand)."""
    jac = torch.autograd.functional.jacobian(lambda inp: model(inp)[0], image)  # (K, 1, C, H, W)
    per_class = (jac.flatten(1) * delta.flatten()).sum(dim=1)
    return per_class - per_class[label]


def test_margin_gains_are_the_jacobian_times_the_step(image):
    model = _frozen("fmnist-cnn-std", torch.float64)
    x = image.double()
    label = 3
    settings = dataclasses.replace(DEFAULT_SETTINGS, hvp="exact", eps=0.05, steps=4)
    names = tuple(f"c{k}" for k in range(10))
    gains = class_margin_gains(model, x, label, settings, names)
    assert list(gains["class"]) == [n for k, n in enumerate(names) if k != label]
    # the gradient step by hand: (α/N)·sign(g), projected to [0, 1]
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_req), torch.tensor([label])), x_req)
    delta = (x + settings.alpha / settings.steps * grad.sign()).clamp(0, 1) - x
    expected = _jacobian_gain(model, x, label, delta)
    np.testing.assert_allclose(gains["along g"], [float(expected[k]) for k in range(10) if k != label], rtol=1e-8)
    with torch.no_grad():
        logits = model(x)[0]
    np.testing.assert_allclose(gains["gap"], [float(logits[label] - logits[k]) for k in range(10) if k != label])
    assert gains["nearest"].sum() == 1 and gains.loc[gains["nearest"], "gap"].iloc[0] == gains["gap"].min()
    assert not np.allclose(gains["along δ̃"], gains["along g"])  # the curvature correction moves the step


def test_margin_gains_first_order_matches_the_network_for_a_tiny_step(image):
    model = _frozen("fmnist-cnn-std", torch.float64)
    settings = dataclasses.replace(DEFAULT_SETTINGS, hvp="exact", eps=1e-7)
    gains = class_margin_gains(model, image.double(), 0, settings, tuple(str(k) for k in range(10)))
    np.testing.assert_allclose(gains["along δ̃, measured"], gains["along δ̃"], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(gains["along g, measured"], gains["along g"], rtol=1e-4, atol=1e-12)


def test_margin_gains_reject_bad_class_names(image):
    model = _frozen("fmnist-cnn-std")
    with pytest.raises(ValueError, match="class_names"):
        class_margin_gains(model, image, 2, DEFAULT_SETTINGS, ("a", "b"))


def test_targeted_views_work_on_the_target_loss(relu_model, image):
    """With a target every view analyses the target's cross-entropy, as targeted SOAE does."""
    settings = dataclasses.replace(DEFAULT_SETTINGS, steps=2, hvp="exact")
    label, target = 4, 7
    plain, aimed = krylov_history(relu_model, image, label, settings), krylov_history(relu_model, image, label,
                                                                                      settings, target)
    result = SOAE(relu_model, **settings.soae_kwargs(), targeted=True, true_residual=True,
                  keep_images=False)(image, torch.tensor([target]))
    assert [r.m for r in aimed] == [int(it.krylov.iterations[0]) for it in result.trace.iterations]
    np.testing.assert_allclose(aimed[0].residuals, result.trace.iterations[0].krylov.residuals[0].numpy())
    assert not np.allclose(plain[0].ritz_values[:1], aimed[0].ritz_values[:1])
    model64 = copy.deepcopy(relu_model).double()
    # Arnoldi starts from the target loss's gradient. (On a ReLU net H = Jᵀ(diag p − ppᵀ)J does not
    # depend on the class, so its nonzero eigenvalues are the untargeted ones.)
    spectrum = hessian_spectrum(model64, image.double(), label, max_dim=40, target=target)
    np.testing.assert_allclose(spectrum.ritz_values,
                               hessian_spectrum(model64, image.double(), target, max_dim=40).ritz_values)
    etas = (1e-3,)
    aimed_fd = fd_accuracy_sweep(relu_model, model64, image, label, etas=etas, target=target)
    at_target = fd_accuracy_sweep(relu_model, model64, image, target, etas=etas)
    np.testing.assert_allclose(aimed_fd["relative_error"], at_target["relative_error"])
    table = tau_to_m_table(relu_model, image, label, DEFAULT_SETTINGS, taus=(1e-2,), max_dim=40, target=target)
    direct = SOAE(relu_model, tau=1e-2, max_krylov=40, hvp="exact").direction(image, torch.tensor([target]))
    assert table.loc[1e-2, "m (exact)"] == int(direct.krylov.iterations[0])
    with pytest.raises(ValueError, match="true class"):
        krylov_history(relu_model, image, label, settings, target=label)


def test_targeted_margin_gains_step_down_the_target_loss(image):
    model = _frozen("fmnist-cnn-std", torch.float64)
    x, label, target = image.double(), 3, 8
    settings = dataclasses.replace(DEFAULT_SETTINGS, hvp="exact", eps=0.05, steps=4)
    names = tuple(f"c{k}" for k in range(10))
    gains = class_margin_gains(model, x, label, settings, names, target=target)
    assert gains["target"].tolist() == [k == target for k in range(10) if k != label]
    # the targeted gradient step by hand: −(α/N)·sign(∇ CE(target)), projected to [0, 1]
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_req), torch.tensor([target])), x_req)
    delta = (x - settings.alpha / settings.steps * grad.sign()).clamp(0, 1) - x
    expected = _jacobian_gain(model, x, label, delta)
    np.testing.assert_allclose(gains["along g"], [float(expected[k]) for k in range(10) if k != label], rtol=1e-8)
    plain = class_margin_gains(model, x, label, settings, names)
    assert not plain["target"].any() and not np.allclose(plain["along g"], gains["along g"])
    # the targeted step gains on the target class more than the untargeted one does
    assert gains.loc[gains["target"], "along g"].iloc[0] > plain.loc[gains["target"], "along g"].iloc[0]
