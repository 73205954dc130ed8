"""The SOAE attack (Algorithm 1): budget, determinism, batch independence, the quadratic case,
robustness (β = 0, non-finite products), honest gradient counts, parameter checks."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cnn, tiny_smooth_mlp, tolerance
from torch import nn

from soae_core.attacks import SOAE
from soae_core.attacks.soae import STEP_RULES


class CountingModel(nn.Module):
    """Counts images passed forward with autograd enabled (= per-image gradient evaluations) and
    forward passes without (predictions)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.gradient_images = self.plain_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient_images += x.shape[0]
        else:
            self.plain_forwards += 1
        return self.inner(x)


def _labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


@pytest.mark.parametrize("step_rule", STEP_RULES)
@pytest.mark.parametrize("hvp", ["finite_difference", "exact", "central_difference"])
def test_output_inside_eps_ball_and_box(images_8x8: torch.Tensor, step_rule: str, hvp: str) -> None:
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    eps = 0.05
    result = SOAE(model, eps=eps, hvp=hvp, step_rule=step_rule, steps=3, random_start=True, seed=0,
                  alpha=10.0)(images_8x8, y)
    assert result.adv.shape == images_8x8.shape and result.adv.dtype == images_8x8.dtype
    assert (result.adv - images_8x8).abs().max() <= eps + 1e-12
    assert result.adv.min() >= 0 and result.adv.max() <= 1
    assert torch.isfinite(result.adv).all()
    for iteration in result.trace.iterations:
        assert (iteration.adv - images_8x8).abs().max() <= eps + 1e-12


def test_input_tensor_is_not_modified(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    before = images_8x8.clone()
    SOAE(model, eps=0.1, random_start=True, seed=1)(images_8x8, _labels(model, images_8x8))
    assert torch.equal(images_8x8, before)


def test_deterministic_for_a_fixed_seed(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    first = SOAE(model, eps=0.1, random_start=True, seed=7)(images_8x8, y)
    second = SOAE(model, eps=0.1, random_start=True, seed=7)(images_8x8, y)
    other = SOAE(model, eps=0.1, random_start=True, seed=8)(images_8x8, y)
    assert torch.equal(first.adv, second.adv)
    assert not torch.equal(first.adv, other.adv)


@pytest.mark.parametrize("hvp", ["exact", "finite_difference"])
def test_batch_equals_each_image_alone(images_8x8: torch.Tensor, hvp: str) -> None:
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    eta = 1e-6
    attack = SOAE(model, eps=0.1, hvp=hvp, eta=eta, step_rule="linf", steps=3, tau=1e-6)
    # Batched and alone differ in summation order only: GMRES's solves magnify that rounding (×1e3);
    # a finite difference divides it by η (×1e6), which dominates. Mixing samples would move
    # pixels by a step, ~ε/3 here, far outside either tolerance.
    amplification = 1e3 if hvp == "exact" else 1 / eta
    batched = attack(images_8x8, y)
    # The network's gradient of one image alone and inside a batch differ by rounding (~1e-17);
    # the forward difference divides that by η = 1e-6, GMRES amplifies it further: measured
    # |Δadv| ≤ 1.8e-8 (the modified Gram–Schmidt solver) and ≤ 1.7e-8 (CGS2). Exact products: 6e-16.
    for i in range(images_8x8.shape[0]):
        alone = attack(images_8x8[i:i + 1], y[i:i + 1])
        torch.testing.assert_close(alone.adv[0], batched.adv[i], **tolerance(torch.float64, amplification))
        for it_alone, it_batch in zip(alone.trace.iterations, batched.trace.iterations, strict=False):
            assert int(it_alone.krylov.iterations[0]) == int(it_batch.krylov.iterations[i])


class QuadraticModel(nn.Module):
    """Returns the flattened image, so loss_fn sees x itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_quadratic_loss_one_iteration_gives_newton_direction() -> None:
    """L(x) = ½ xᵀAx + cᵀx with known SPD A: δ̃ must equal A⁻¹g with exact products."""
    gen = torch.Generator().manual_seed(11)
    n = 9
    factor = torch.randn(n, n, generator=gen, dtype=torch.float64)
    hessian = factor @ factor.T / n + 0.5 * torch.eye(n, dtype=torch.float64)
    linear = torch.randn(n, generator=gen, dtype=torch.float64)

    def quadratic(output: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.einsum("bi,ij,bj->b", output, hessian, output) + output @ linear

    x = torch.rand(2, 1, 3, 3, generator=gen, dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    attack = SOAE(QuadraticModel(), eps=0.1, hvp="exact", tau=1e-12, steps=1, max_krylov=n,
                  loss_fn=quadratic)
    result = attack(x, y)
    gradient = x.flatten(1) @ hessian + linear
    newton = torch.linalg.solve(hessian, gradient.T).T
    iteration = result.trace.iterations[0]
    torch.testing.assert_close(iteration.direction.flatten(1), newton, rtol=1e-9, atol=1e-11)
    assert iteration.krylov.converged.all()


def test_accuracy_under_attack_below_clean_on_a_trained_model() -> None:
    from soae_core.data import load_samples
    from soae_core.models import load_model

    model = load_model("fmnist-cnn-std")
    samples = load_samples("fashion_mnist")
    x, y = samples.images[::4], samples.labels[::4]  # 50 images, 5 per class
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean()
    for hvp in ("finite_difference", "exact"):
        result = SOAE(model, eps=0.1, hvp=hvp, steps=2, max_krylov=10, keep_images=False)(x, y)
        with torch.no_grad():
            robust = (model(result.adv).argmax(1) == y).float().mean()
        assert robust < clean, f"{hvp}: {robust} !< {clean}"


def test_zero_gradient_gives_no_nan_and_no_step() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5)).double()
    nn.init.zeros_(model[1].weight)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    for hvp in ("finite_difference", "exact"):
        result = SOAE(model, eps=0.1, hvp=hvp)(x, y)
        assert torch.equal(result.adv, x)
        first = result.trace.iterations[0]
        assert first.krylov.stop_reason == ["beta_zero"] * 3
        assert all("zero gradient" in note for note in result.trace.notes)


class BlowsUpOutsideBox(nn.Module):
    """Finite logits and gradients on [0, 1] images; NaN (with NaN gradients) once a pixel
    goes below −1e-6 — so a finite-difference step x + ηv off the box gives a non-finite product."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lowest = x.flatten(1).min(dim=1).values
        return self.inner(x) + 0.0 * torch.sqrt(lowest + 1e-6)[:, None]


def test_nonfinite_finite_difference_products_never_give_nan() -> None:
    model = BlowsUpOutsideBox()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    x[:, :, 0, 0] = 0.0  # a pixel on the edge of the box: any step along −v leaves it
    y = torch.tensor([0, 1, 2, 3])
    result = SOAE(model, eps=0.1, hvp="finite_difference", eta=1e-3, steps=2)(x, y)
    assert torch.isfinite(result.adv).all()
    assert (result.adv - x).abs().max() <= 0.1 + 1e-12
    reasons = {reason for it in result.trace.iterations for reason in it.krylov.stop_reason}
    assert "nonfinite" in reasons
    assert any("non-finite" in note for note in result.trace.notes)


def test_grad_evals_equals_trace_and_an_independent_count(images_8x8: torch.Tensor) -> None:
    for hvp, per_product in (("finite_difference", 1), ("central_difference", 2)):
        model = CountingModel(tiny_cnn())
        y = _labels(model, images_8x8)
        result = SOAE(model, eps=0.1, hvp=hvp, steps=3)(images_8x8, y)
        batch = images_8x8.shape[0]
        per_sample = result.trace.grad_evals_per_sample
        assert result.grad_evals == result.trace.grad_evals == -(-int(per_sample.sum()) // batch)
        assert model.gradient_images == int(per_sample.sum())
        # per image: a gradient per iteration + products (initial residual + one per Krylov step)
        expected = sum(1 + per_product * (1 + it.krylov.iterations) for it in result.trace.iterations)
        assert torch.equal(per_sample, expected)
        # a single image: the exact count
        model.gradient_images = 0
        single = SOAE(model, eps=0.1, hvp=hvp, steps=3)(images_8x8[:1], y[:1])
        assert single.grad_evals == model.gradient_images


@pytest.mark.parametrize("random_start", [False, True])
def test_the_trace_reads_each_iterates_prediction_off_the_gradient_taken_there(images_8x8: torch.Tensor,
                                                                                random_start: bool) -> None:
    """Loss, prediction and confidence before the attack and after every step are those of a
    forward pass at that point, yet SOAE runs only two forward passes of its own besides its
    gradients (the label check and the final iterate), three with a random start (the clean images)."""
    model = CountingModel(tiny_cnn())
    y = _labels(model.inner, images_8x8)
    result = SOAE(model, eps=0.1, steps=3, random_start=random_start, seed=0)(images_8x8, y)
    assert model.plain_forwards == (3 if random_start else 2)
    trace = result.trace

    def at(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = model.inner(x)
        probabilities = torch.softmax(logits, dim=1)
        return nn.functional.cross_entropy(logits, y, reduction="none"), probabilities.argmax(1), probabilities.amax(1)

    loss, prediction, confidence = at(images_8x8)
    torch.testing.assert_close(trace.initial_loss, loss)
    assert torch.equal(trace.initial_prediction, prediction)
    torch.testing.assert_close(trace.initial_confidence, confidence)
    for iteration in trace.iterations:
        loss, prediction, confidence = at(iteration.adv)
        torch.testing.assert_close(iteration.loss_after, loss)
        assert torch.equal(iteration.prediction, prediction)
        torch.testing.assert_close(iteration.confidence, confidence)


def test_exact_mode_reaches_rank_bound_on_relu_net(images_8x8: torch.Tensor) -> None:
    """ReLU net, 5 classes: input Hessian rank ≤ 4, so GMRES (float64, exact) stops by m ≤ 4."""
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    result = SOAE(model, eps=0.05, hvp="exact", tau=1e-10, steps=2, max_krylov=40)(images_8x8, y)
    for iteration in result.trace.iterations:
        assert int(iteration.krylov.iterations.max()) <= 4
        assert set(iteration.krylov.stop_reason) <= {"breakdown", "converged", "beta_zero"}


def test_smooth_net_needs_more_krylov_steps_than_rank_bound() -> None:
    model = tiny_smooth_mlp()
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    y = _labels(model, x)
    result = SOAE(model, eps=0.05, hvp="exact", tau=1e-10, steps=1, max_krylov=40)(x, y)
    assert int(result.trace.iterations[0].krylov.iterations.max()) > 3


def test_targeted_attack_raises_target_probability(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    target = (_labels(model, images_8x8) + 1) % 5
    result = SOAE(model, eps=0.2, hvp="exact", targeted=True, steps=4)(images_8x8, target)
    with torch.no_grad():
        before = torch.softmax(model(images_8x8), 1).gather(1, target[:, None])
        after = torch.softmax(model(result.adv), 1).gather(1, target[:, None])
    assert (after > before).float().mean() >= 0.8


def test_model_mode_is_restored_and_parameters_untouched(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    before = [parameter.clone() for parameter in model.parameters()]
    SOAE(model, eps=0.1, hvp="exact")(images_8x8, torch.zeros(6, dtype=torch.long))
    assert model.training
    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=False))


def test_trace_records_every_iteration(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    result = SOAE(model, eps=0.1, steps=3, true_residual=True)(images_8x8, y)
    trace = result.trace
    assert len(trace.iterations) == 3
    for iteration in trace.iterations:
        assert iteration.loss.shape == iteration.loss_after.shape == (6,)
        assert iteration.prediction.dtype == torch.long and iteration.confidence.shape == (6,)
        assert ((iteration.confidence > 0) & (iteration.confidence <= 1)).all()
        assert len(iteration.krylov.residuals) == 6
        assert all(float(r[0]) == 1.0 for r in iteration.krylov.residuals)
        assert iteration.krylov.true_residuals is not None
        assert ((iteration.cosine_to_gradient >= -1 - 1e-9) & (iteration.cosine_to_gradient <= 1 + 1e-9)).all()
    # the loss before iteration n+1 is the loss after iteration n
    torch.testing.assert_close(trace.iterations[0].loss_after, trace.iterations[1].loss)


def test_works_in_both_precisions_on_every_device(dtype: torch.dtype, device: torch.device) -> None:
    model = tiny_cnn(dtype=dtype).to(device)
    x = torch.rand(3, 1, 8, 8, dtype=dtype, device=device)
    y = _labels(model, x)
    for hvp in ("finite_difference", "exact"):
        result = SOAE(model, eps=0.1, hvp=hvp)(x, y)
        assert result.adv.dtype == dtype and result.adv.device == x.device and torch.isfinite(result.adv).all()


@pytest.mark.parametrize("kwargs, word", [
    ({"eta": 0.0}, "eta"), ({"eta": -1e-5}, "eta"), ({"eta": float("nan")}, "eta"),
    ({"tau": 0.0}, "tau"), ({"tau": 1.0}, "tau"), ({"tau": 1.5}, "tau"),
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"steps": True}, "steps"),
    ({"eps": -0.1}, "eps"), ({"eps": float("nan")}, "eps"), ({"eps": float("inf")}, "eps"),
    ({"alpha": -1.0}, "alpha"), ({"hvp": "newton"}, "hvp"), ({"step_rule": "l2"}, "step_rule"),
    ({"max_krylov": 0}, "max_krylov"),
])
def test_bad_parameters_raise_value_error_naming_them(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SOAE(tiny_cnn(), **kwargs)


def test_bad_inputs_raise_value_error(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    attack = SOAE(model)
    y = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(images_8x8 * 2, y)
    nan_images = images_8x8.clone()
    nan_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        attack(nan_images, y)
    with pytest.raises(ValueError, match="shape"):
        attack(images_8x8[0], y)
    with pytest.raises(ValueError, match="shape"):
        attack(images_8x8, y[:3])
    with pytest.raises(ValueError, match="class indices"):
        attack(images_8x8, torch.full((6,), 5))
    with pytest.raises(ValueError, match="class indices"):
        attack(images_8x8, torch.full((6,), -1))
    with pytest.raises(ValueError, match="dtype"):
        attack(images_8x8.float(), y)


def test_start_noise_given_by_the_caller_equals_the_seeded_start(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    seeded = SOAE(model, eps=0.1, random_start=True, seed=7)(images_8x8, y)
    noise = torch.rand(images_8x8.shape, generator=torch.Generator().manual_seed(7), dtype=images_8x8.dtype)
    given = SOAE(model, eps=0.1, random_start=True, start_noise=noise)(images_8x8, y)
    assert torch.equal(seeded.adv, given.adv)
    with pytest.raises(ValueError, match=r"start_noise has shape \(3, 1, 8, 8\).*\(6, 1, 8, 8\)"):
        SOAE(model, eps=0.1, random_start=True, start_noise=noise[:3])(images_8x8, y)
    with pytest.raises(ValueError, match="start_noise must be a floating-point tensor"):
        SOAE(model, eps=0.1, random_start=True, start_noise=[0.5])


# ---------------------------------------------------------------------- direction="gradient" (the ablation)
def _sign_gradient_by_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                           steps: int, start: torch.Tensor) -> torch.Tensor:
    """Iterated sign-gradient ascent of the summed cross-entropy: (α/N)·sign(∇L) per step, clipped to the
    ε-box around x and to [0, 1] — written out here, independent of the library."""
    x_n = start.clone()
    for _ in range(steps):
        x_n.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_n), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_n)
        x_n = x_n.detach() + (alpha / steps) * grad.sign()
        x_n = torch.clamp(torch.minimum(torch.maximum(x_n, x - eps), x + eps), 0.0, 1.0)
    return x_n


@pytest.mark.parametrize("random_start", [False, True])
def test_gradient_direction_is_iterated_sign_gradient_with_the_same_alpha(images_8x8: torch.Tensor,
                                                                          random_start: bool) -> None:
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    eps, steps = 0.1, 4
    attack = SOAE(model, eps=eps, steps=steps, direction="gradient", random_start=random_start, seed=3)
    result = attack(images_8x8, y)
    start = images_8x8
    if random_start:  # the same random start as SOAE's: uniform in the ε-ball from the seeded generator
        noise = torch.rand(images_8x8.shape, generator=torch.Generator().manual_seed(3), dtype=images_8x8.dtype)
        start = torch.clamp(images_8x8 + (2 * noise - 1) * eps, 0.0, 1.0)
    expected = _sign_gradient_by_hand(model, images_8x8, y, eps, 2.5 * eps, steps, start)
    assert attack.alpha == pytest.approx(2.5 * eps)
    torch.testing.assert_close(result.adv, expected, rtol=0, atol=1e-12)


def test_gradient_direction_runs_no_hessian_products_and_counts_one_gradient_per_step(images_8x8) -> None:
    model = CountingModel(tiny_cnn())
    y = _labels(model, images_8x8)
    result = SOAE(model, eps=0.1, steps=3, hvp="exact", direction="gradient")(images_8x8, y)
    assert model.gradient_images == 3 * images_8x8.shape[0]  # one gradient per image and step, nothing else
    assert result.grad_evals == 3 and torch.equal(result.trace.grad_evals_per_sample, torch.full((6,), 3))
    for iteration in result.trace.iterations:
        assert iteration.krylov is None
        torch.testing.assert_close(iteration.cosine_to_gradient, torch.ones(6, dtype=torch.float64))


def test_default_direction_is_newton_and_differs_from_gradient(images_8x8: torch.Tensor) -> None:
    model = tiny_cnn()
    y = _labels(model, images_8x8)
    default = SOAE(model, eps=0.1, hvp="exact")(images_8x8, y)
    newton = SOAE(model, eps=0.1, hvp="exact", direction="newton")(images_8x8, y)
    gradient = SOAE(model, eps=0.1, hvp="exact", direction="gradient")(images_8x8, y)
    assert SOAE(model).direction_kind == "newton"
    assert torch.equal(default.adv, newton.adv)
    assert all(it.krylov is not None for it in default.trace.iterations)
    assert not torch.equal(default.adv, gradient.adv)  # the curvature correction changes the step


def test_soae_without_curvature_is_in_the_registry_and_fixes_the_direction(images_8x8: torch.Tensor) -> None:
    from soae_core.attacks import ATTACKS, SOAEWithoutCurvature

    model = tiny_cnn()
    y = _labels(model, images_8x8)
    assert ATTACKS["SOAE-g"] is SOAEWithoutCurvature and SOAEWithoutCurvature.name == "SOAE-g"
    registry = ATTACKS["SOAE-g"](model, eps=0.1, steps=3)(images_8x8, y)
    direct = SOAE(model, eps=0.1, steps=3, direction="gradient")(images_8x8, y)
    assert torch.equal(registry.adv, direct.adv)
    with pytest.raises(ValueError, match="direction"):
        SOAEWithoutCurvature(model, direction="newton")


def test_bad_direction_raises_value_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="direction.*newton.*gradient"):
        SOAE(tiny_cnn(), direction="hessian")


def test_quadratic_direction_maximises_the_quadratic_model_over_the_step_box(images_8x8: torch.Tensor) -> None:
    """eq. (4) literally: δ̃ lies in ‖δ‖∞ ≤ α/N and Q(δ̃) = gᵀδ̃ + ½δ̃ᵀHδ̃ (exact H, checked here with
    torch.autograd.functional.hvp) is at least Q of the start (α/N)·sign(g); each step costs 1 + 10 evaluations."""
    from soae_core.attacks.soae import QUADRATIC_ASCENT_STEPS

    model = CountingModel(tiny_cnn())
    y = _labels(model, images_8x8)
    attack = SOAE(model, eps=0.1, steps=2, hvp="exact", direction="quadratic")
    found = attack.direction(images_8x8, y)
    radius = attack.alpha / attack.steps
    assert found.direction.abs().max() <= radius + 1e-12 and found.krylov is None
    assert torch.equal(found.grad_evals_per_sample, torch.full((6,), 1 + QUADRATIC_ASCENT_STEPS))

    def quadratic(delta: torch.Tensor) -> torch.Tensor:
        def loss(inp: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(model.inner(inp), y, reduction="sum")
        _, h_delta = torch.autograd.functional.hvp(loss, images_8x8, delta)
        return ((found.gradient + 0.5 * h_delta) * delta).flatten(1).sum(dim=1)

    start = radius * found.gradient.sign()
    assert (quadratic(found.direction) >= quadratic(start) - 1e-12).all()
    assert (quadratic(found.direction) > quadratic(start) + 1e-9).any()  # the ascent moved somewhere
    result = attack(images_8x8, y)
    assert result.grad_evals == 2 * (1 + QUADRATIC_ASCENT_STEPS)
    assert (result.adv - images_8x8).abs().max() <= 0.1 + 1e-12
    with pytest.raises(ValueError, match="quadratic"):
        SOAE(model, direction="quadratic", targeted=True)
    with pytest.raises(ValueError, match="quadratic"):
        SOAE(model, direction="quadratic", step_rule="raw")
