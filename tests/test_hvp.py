"""Input Hessian-vector products: exact vs torch's dense Hessian, finite differences converge,
samples never mix, parameters gather no gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cnn, tiny_smooth_mlp, tolerance

from soae_core.hvp import hvp_central_difference, hvp_exact, hvp_forward_difference, input_gradient, make_hvp_operator


def _dense_hessian(model, x, y) -> torch.Tensor:
    def loss(flat: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(flat.view_as(x)), y, reduction="sum")
    return torch.autograd.functional.hessian(loss, x.flatten())


def _smooth_batch():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 3, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    v = torch.randn(3, 1, 3, 3, generator=gen, dtype=torch.float64)
    return tiny_smooth_mlp(), x, y, v


def test_gradient_matches_autograd_functional() -> None:
    model, x, y, _ = _smooth_batch()
    loss, grad = input_gradient(model, x, y)
    reference = torch.autograd.functional.jacobian(
        lambda flat: F.cross_entropy(model(flat.view_as(x)), y, reduction="sum"), x.flatten())
    torch.testing.assert_close(grad.flatten(), reference, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y, reduction="none"))


def test_exact_product_equals_dense_hessian() -> None:
    model, x, y, v = _smooth_batch()
    dense = _dense_hessian(model, x, y)
    expected = (dense @ v.flatten()).view_as(v)
    torch.testing.assert_close(hvp_exact(model, x, y, v), expected, **tolerance(torch.float64))


def test_finite_differences_converge_to_exact_as_eta_shrinks() -> None:
    model, x, y, v = _smooth_batch()
    exact = hvp_exact(model, x, y, v)
    forward_errors, central_errors = [], []
    for eta in (1e-1, 1e-2, 1e-3, 1e-4):
        forward_errors.append(float((hvp_forward_difference(model, x, y, v, eta) - exact).norm() / exact.norm()))
        central_errors.append(float((hvp_central_difference(model, x, y, v, eta) - exact).norm() / exact.norm()))
    # Forward difference: O(η) truncation; central: O(η²). Each decade of η cuts the error by
    # roughly 10× and 100× respectively (allow slack for the leading constant).
    for coarse, fine in zip(forward_errors, forward_errors[1:], strict=False):
        assert fine < coarse / 5
    for coarse, fine in zip(central_errors[:2], central_errors[1:3], strict=False):
        assert fine < coarse / 50
    assert forward_errors[-1] < 1e-3 and central_errors[-1] < 1e-6


@pytest.mark.parametrize("mode", ["exact", "finite_difference", "central_difference"])
def test_changing_one_sample_leaves_the_others_products_unchanged(mode: str) -> None:
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    v = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    changed = x.clone()
    changed[1] = torch.rand(1, 8, 8, generator=gen, dtype=torch.float64)
    products = []
    for images in (x, changed):
        grad = input_gradient(model, images, y)[1]
        matvec, _ = make_hvp_operator(model, images, y, mode, eta=1e-6, grad_at_x=grad)
        products.append(matvec(v, index=torch.arange(3)))
    torch.testing.assert_close(products[0][[0, 2]], products[1][[0, 2]], rtol=1e-9, atol=1e-12)
    assert not torch.allclose(products[0][1], products[1][1])


@pytest.mark.parametrize("mode", ["exact", "finite_difference"])
def test_operator_on_a_subset_equals_the_full_batch_rows(mode: str) -> None:
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    v = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    matvec, evals = make_hvp_operator(model, x, y, mode, eta=1e-5, grad_at_x=input_gradient(model, x, y)[1])
    full = matvec(v, index=torch.arange(4))  # every sample: nothing gathered
    subset = matvec(v[[1, 3]], index=torch.tensor([1, 3]))
    torch.testing.assert_close(subset, full[[1, 3]], **tolerance(torch.float64))
    assert evals() == 2


def test_zero_direction_gives_zero_product() -> None:
    model, x, y, _ = _smooth_batch()
    zero = torch.zeros_like(x)
    assert hvp_forward_difference(model, x, y, zero, 1e-4).abs().max() == 0
    assert hvp_exact(model, x, y, zero).abs().max() == 0


def test_parameters_gather_no_gradients_even_if_trainable() -> None:
    model, x, y, v = _smooth_batch()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    input_gradient(model, x, y)
    hvp_exact(model, x, y, v)
    hvp_forward_difference(model, x, y, v, 1e-4)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not model.training


def test_products_keep_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    model = tiny_cnn(dtype=dtype).to(device)
    x = torch.rand(2, 1, 8, 8, dtype=dtype, device=device)
    y = torch.tensor([0, 1], device=device)
    v = torch.randn_like(x)
    for product in (hvp_exact(model, x, y, v), hvp_forward_difference(model, x, y, v, 1e-3),
                    hvp_central_difference(model, x, y, v, 1e-3)):
        assert product.dtype == dtype and product.device == x.device and product.shape == x.shape
        assert torch.isfinite(product).all()


def test_unknown_mode_is_refused() -> None:
    model, x, y, _ = _smooth_batch()
    with pytest.raises(ValueError, match="hvp"):
        make_hvp_operator(model, x, y, "newton", eta=1e-5)
