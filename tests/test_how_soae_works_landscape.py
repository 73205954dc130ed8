"""Loss landscapes around a real image, checked against a dense Hessian and direct model calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cnn, tiny_smooth_mlp

from soae_core.analysis.how_soae_works import (
    Directions,
    default_radius,
    landscape_points,
    loss_along_line,
    loss_landscape,
    loss_on_plane,
    plane_basis,
    soae_directions,
)


def setup(seed: int = 3):
    model = tiny_smooth_mlp()
    image = torch.rand(1, 1, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return model, image, 2


def loss_fn(model, label):
    return lambda flat: F.cross_entropy(model(flat.reshape(1, 1, 3, 3)), torch.tensor([label]))


def dense_gradient_and_hessian(model, image, label):
    flat = image.flatten()
    gradient = torch.autograd.functional.jacobian(loss_fn(model, label), flat)
    hessian = torch.autograd.functional.hessian(loss_fn(model, label), flat)
    return gradient, hessian


def direct_loss(model, point, label) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(point), torch.tensor([label])))


def test_loss_along_line_matches_direct_evaluation_and_dense_taylor_coefficients():
    model, image, label = setup()
    direction = torch.randn(image.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    line = loss_along_line(model, image, label, direction, radius=0.5, points=11)
    u = direction / direction.norm()
    for k in (0, 4, 10):
        assert line.loss[k] == pytest.approx(direct_loss(model, image + line.offsets[k] * u, label), rel=1e-12)
    gradient, hessian = dense_gradient_and_hessian(model, image, label)
    assert line.slope == pytest.approx(float(gradient @ u.flatten()), rel=1e-10)
    assert line.curvature == pytest.approx(float(u.flatten() @ hessian @ u.flatten()), rel=1e-10)
    assert line.loss[5] == pytest.approx(line.loss_at_image) and line.offsets[5] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(line.quadratic, line.loss_at_image + line.slope * line.offsets
                               + 0.5 * line.curvature * line.offsets ** 2)


def test_quadratic_model_along_the_line_is_second_order_accurate():
    model, image, label = setup()
    direction = torch.ones_like(image)
    errors = []
    for radius in (1e-2, 5e-3):
        line = loss_along_line(model, image, label, direction, radius=radius, points=3)
        errors.append(abs(line.loss[-1] - line.quadratic[-1]))
    assert 5 < errors[0] / errors[1] < 11


def test_soae_direction_with_exact_products_solves_the_dense_newton_system():
    model, image, label = setup()
    directions = soae_directions(model, image, label, {"hvp": "exact", "tau": 1e-10, "max_krylov": 9})
    gradient, hessian = dense_gradient_and_hessian(model, image, label)
    np.testing.assert_allclose(directions.gradient.flatten().numpy(), gradient.numpy(), rtol=1e-10)
    newton = torch.linalg.solve(hessian, gradient)
    np.testing.assert_allclose(directions.soae_direction.flatten().numpy(), newton.numpy(), rtol=1e-6, atol=1e-8)
    assert directions.cosine == pytest.approx(float(F.cosine_similarity(newton, gradient, dim=0)), rel=1e-6)


def test_loss_on_plane_matches_direct_evaluation_and_projected_hessian():
    model, image, label = setup()
    directions = soae_directions(model, image, label, {"hvp": "exact", "tau": 1e-10, "max_krylov": 9})
    plane = loss_on_plane(model, image, label, directions, radius=0.4, points=5)
    assert plane.loss.shape == plane.quadratic.shape == (5, 5) and plane.note == ""
    u1, u2, _ = plane_basis(directions.gradient, directions.soae_direction)
    basis = torch.stack([u1.flatten(), u2.flatten()])
    np.testing.assert_allclose((basis @ basis.T).numpy(), np.eye(2), atol=1e-12)
    gradient, hessian = dense_gradient_and_hessian(model, image, label)
    np.testing.assert_allclose(plane.hessian_2d, (basis @ hessian @ basis.T).numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(plane.gradient_coords, (basis @ gradient).numpy(), rtol=1e-10)
    assert plane.gradient_coords[1] == pytest.approx(0.0, abs=1e-10)  # u₂ ⟂ g
    i, j = 1, 3  # row i ↔ b[i], column j ↔ a[j]
    point = image + plane.a[j] * u1 + plane.b[i] * u2
    assert plane.loss[i, j] == pytest.approx(direct_loss(model, point, label), rel=1e-12)
    assert plane.quadratic[2, 2] == pytest.approx(plane.loss_at_image) == pytest.approx(plane.loss[2, 2])
    # δ̃ lies in the plane: its unit vector has unit length in the (u₁, u₂) coordinates.
    assert np.linalg.norm(plane.soae_coords) == pytest.approx(1.0, rel=1e-9)
    assert plane.soae_coords[0] == pytest.approx(directions.cosine, rel=1e-9)


def test_parallel_directions_get_a_random_orthogonal_second_axis_and_a_note():
    model, image, label = setup()
    gradient = dense_gradient_and_hessian(model, image, label)[0].reshape(image.shape)
    directions = Directions(loss=0.0, gradient=gradient, soae_direction=-3 * gradient, cosine=-1.0)
    plane = loss_on_plane(model, image, label, directions, radius=0.1, points=3)
    assert "parallel" in plane.note
    assert plane.gradient_coords[1] == pytest.approx(0.0, abs=1e-10)
    assert np.isfinite(plane.loss).all()


def test_relu_cnn_line_and_default_radius():
    model = tiny_cnn()
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert default_radius(image, 8 / 255) == pytest.approx(8 / 255 * 8)
    directions = soae_directions(model, image, 1, {"hvp": "exact", "tau": 1e-6})
    line = loss_along_line(model, image, 1, directions.soae_direction, radius=0.3, points=7)
    assert np.isfinite(line.loss).all() and line.curvature >= -1e-9  # PSD Hessian for a ReLU net


def test_loss_landscape_is_the_lines_and_the_plane_at_the_scaled_corner_radius():
    model = tiny_cnn()
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kwargs = {"eps": 8 / 255, "hvp": "exact", "tau": 1e-6}
    landscape = loss_landscape(model, image, 1, kwargs, scale=0.5)
    assert landscape.corner == pytest.approx(default_radius(image, 8 / 255))
    assert landscape.radius == pytest.approx(0.5 * landscape.corner)
    line_points, plane_points = landscape_points(image[0].numel())
    directions = soae_directions(model, image, 1, kwargs)
    along_soae = loss_along_line(model, image, 1, directions.soae_direction, landscape.radius, line_points)
    np.testing.assert_allclose(landscape.along_soae.loss, along_soae.loss)
    assert landscape.along_gradient.offsets[-1] == pytest.approx(landscape.radius)
    assert landscape.plane.loss.shape == (plane_points, plane_points)
    assert landscape_points(3 * 224 * 224)[0] < line_points  # fewer points for ImageNet-size images


@pytest.mark.parametrize("change, word", [("batch", "image"), ("zero", "direction"), ("radius", "radius"),
                                          ("label", "label")])
def test_bad_inputs_raise_value_errors_naming_them(change, word):
    model, image, label = setup()
    direction, radius = torch.ones_like(image), 0.1
    if change == "batch":
        image = image.repeat(2, 1, 1, 1)
    elif change == "zero":
        direction = torch.zeros_like(image)
    elif change == "radius":
        radius = -1.0
    else:
        label = -1
    with pytest.raises(ValueError, match=word):
        loss_along_line(model, image, label, direction, radius=radius)


def test_targeted_landscape_is_the_target_loss():
    model, image, label = setup()
    kwargs = {"eps": 8 / 255, "hvp": "exact", "tau": 1e-6}
    target = 0
    plain = loss_landscape(model, image, label, kwargs, scale=0.5)
    aimed = loss_landscape(model, image, label, kwargs, scale=0.5, target=target)
    assert aimed.target == target and plain.target is None
    assert aimed.along_gradient.loss_at_image == pytest.approx(direct_loss(model, image, target))
    assert plain.along_gradient.loss_at_image == pytest.approx(direct_loss(model, image, label))
    assert aimed.along_gradient.loss_at_image != pytest.approx(plain.along_gradient.loss_at_image)
    # g and δ̃ of the target's loss: the line along g has slope ‖∇ CE(target)‖.
    gradient, _ = dense_gradient_and_hessian(model, image, target)
    assert aimed.along_gradient.slope == pytest.approx(float(gradient.norm()), rel=1e-8)
    directions = soae_directions(model, image, target, kwargs)
    np.testing.assert_allclose(aimed.along_soae.loss, loss_along_line(model, image, target, directions.soae_direction,
                                                                       aimed.radius, len(aimed.along_soae.loss)).loss)
    with pytest.raises(ValueError, match="true class"):
        loss_landscape(model, image, label, kwargs, target=label)
