"""The 2-D toy of the "How SOAE works" page, checked against independent computations:
finite differences of the loss, NumPy's linear solver, closed-form GMRES iterates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from soae_core.analysis.how_soae_works import (
    ACTIVATIONS,
    TOY_CLASSES,
    loss_grid,
    make_toy_data,
    second_order_step,
    toy_classifier,
    toy_loss,
    train_toy_classifier,
)

POINT = np.array([0.5, 0.45])


def loss_at(model, point, label) -> float:
    with torch.no_grad():
        return float(toy_loss(model, torch.tensor(np.asarray(point, dtype=np.float64)[None]), label)[0])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_toy_classifier_learns_the_three_blobs_and_is_reproducible(activation):
    trained = toy_classifier(activation)
    assert trained.train_accuracy > 0.9
    again = train_toy_classifier(activation)
    for first, second in zip(trained.model.parameters(), again.model.parameters(), strict=False):
        assert torch.equal(first, second)
        assert not first.requires_grad
    points, labels = make_toy_data()
    assert points.min() >= 0 and points.max() <= 1 and set(labels.tolist()) == {0, 1, 2}


def test_gradient_and_hessian_match_finite_differences_of_the_loss():
    model, label, h = toy_classifier("tanh").model, 0, 1e-4
    step = second_order_step(model, POINT, label)
    e = np.eye(2)
    gradient = [(loss_at(model, POINT + h * e[i], label) - loss_at(model, POINT - h * e[i], label)) / (2 * h)
                for i in range(2)]
    hessian = [[(loss_at(model, POINT + h * e[i] + h * e[j], label) - loss_at(model, POINT + h * e[i] - h * e[j], label)
                 - loss_at(model, POINT - h * e[i] + h * e[j], label) + loss_at(model, POINT - h * e[i] - h * e[j], label))
                / (4 * h * h) for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(step.gradient, gradient, rtol=1e-6)
    np.testing.assert_allclose(step.hessian, hessian, rtol=1e-4, atol=1e-3)
    assert step.loss == pytest.approx(loss_at(model, POINT, label), rel=1e-12)
    np.testing.assert_allclose(step.eigenvalues, np.linalg.eigvalsh(np.asarray(hessian)), rtol=1e-4, atol=1e-3)
    assert step.probabilities.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_direction_and_gmres_iterates_follow_their_closed_forms(activation):
    step = second_order_step(toy_classifier(activation).model, POINT, 1)
    g, hessian = step.gradient, step.hessian
    np.testing.assert_allclose(step.direction, np.linalg.solve(hessian, g), rtol=1e-9)
    # GMRES from δ_0 = g: δ_1 = g + c r0 minimises ‖r0 − c H r0‖ with r0 = g − Hg; δ_2 = H⁻¹g.
    r0 = g - hessian @ g
    h_r0 = hessian @ r0
    c = (h_r0 @ r0) / (h_r0 @ h_r0)
    assert len(step.gmres_iterates) == 3
    np.testing.assert_allclose(step.gmres_iterates[0], g)
    np.testing.assert_allclose(step.gmres_iterates[1], g + c * r0, rtol=1e-9)
    np.testing.assert_allclose(step.gmres_iterates[2], step.direction, rtol=1e-7)
    expected_residual = np.linalg.norm(r0 - c * h_r0) / np.linalg.norm(r0)
    assert step.gmres_residuals[1] == pytest.approx(expected_residual, rel=1e-9)
    assert step.gmres_residuals[-1] < 1e-8
    assert step.ascent == pytest.approx(float(g @ np.linalg.solve(hessian, g)), rel=1e-9)
    for eigenvalues, kind in (((1.0, 2.0), "positive definite"), ((-1.0, 2.0), "indefinite"),
                              ((-2.0, -1.0), "negative definite")):
        assert dataclasses.replace(step, eigenvalues=np.array(eigenvalues)).curvature == kind


def test_relu_toy_hessian_is_positive_semidefinite_everywhere():
    model = toy_classifier("relu").model
    for point in [(0.1, 0.1), (0.5, 0.45), (0.9, 0.6), (0.3, 0.8)]:
        for label in range(len(TOY_CLASSES)):
            eigenvalues = second_order_step(model, point, label).eigenvalues
            assert eigenvalues.min() >= -1e-9 * max(1.0, abs(eigenvalues).max())


def test_candidate_steps_stay_in_the_box_and_report_true_and_quadratic_losses():
    model, eps = toy_classifier("tanh").model, 0.08
    point = np.array([0.03, 0.5])  # near the left edge: projection onto [0, 1] matters
    step = second_order_step(model, point, 2, eps=eps)
    assert len(step.candidates) == 4
    for candidate in step.candidates:
        offset = candidate.point - point
        assert np.abs(offset).max() <= eps + 1e-12
        assert candidate.point.min() >= 0 and candidate.point.max() <= 1
        assert candidate.loss == pytest.approx(loss_at(model, candidate.point, 2), rel=1e-12)
        expected_q = step.loss + step.gradient @ offset + 0.5 * offset @ step.hessian @ offset
        assert candidate.quadratic == pytest.approx(expected_q, rel=1e-12)
    sign_step = step.candidates[0]
    np.testing.assert_allclose(sign_step.point, np.clip(point + eps * np.sign(step.gradient), 0, 1))


def test_quadratic_model_is_second_order_accurate():
    model = toy_classifier("tanh").model
    step = second_order_step(model, POINT, 0)
    direction = np.array([0.6, -0.8])
    errors = [abs(loss_at(model, POINT + t * direction, 0) - step.quadratic(t * direction)) for t in (1e-2, 5e-3)]
    # Taylor remainder O(t³): halving t divides the error by about 8.
    assert 5 < errors[0] / errors[1] < 11


def test_loss_grid_holds_the_loss_and_the_decision_regions():
    model = toy_classifier("tanh").model
    grid = loss_grid(model, 1, resolution=11)
    assert grid.loss.shape == grid.prediction.shape == (11, 11)
    i, j = 3, 7
    assert grid.loss[i, j] == pytest.approx(loss_at(model, (grid.xs[j], grid.ys[i]), 1), rel=1e-12)
    with torch.no_grad():
        expected = int(model(torch.tensor([[grid.xs[j], grid.ys[i]]], dtype=torch.float64)).argmax())
    assert grid.prediction[i, j] == expected
    step = second_order_step(model, (grid.xs[j], grid.ys[i]), 1)
    assert step.quadratic_grid(grid)[i, j] == pytest.approx(step.loss)


@pytest.mark.parametrize("kwargs, word", [({"point": (1.2, 0.5)}, "point"), ({"point": (0.5,)}, "point"),
                                          ({"label": 3}, "label"), ({"eps": 0.0}, "eps"), ({"tau": 1.0}, "tau")])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, word):
    arguments = {"point": (0.5, 0.5), "label": 0, **kwargs}
    with pytest.raises(ValueError, match=word):
        second_order_step(toy_classifier("tanh").model, **arguments)
