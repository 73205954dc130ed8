"""Baseline attacks (FGSM, PGD, AutoAttack, ASOD) and the shared attack contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from soae_core.attacks import ASOD, ATTACKS, FGSM, PGD, AutoAttack
from soae_core.attacks.counting import CountingModel

BASELINES = {"FGSM": FGSM, "PGD": PGD, "AutoAttack": AutoAttack, "ASOD": ASOD}


def tiny_cnn(dtype: torch.dtype = torch.float32, frozen: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).to(dtype)
    for p in model.parameters():
        p.requires_grad_(not frozen)
    return model.eval()


def batch(n: int = 6, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images labelled with the tiny model's own predictions (clean accuracy 100%)."""
    x = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        y = tiny_cnn(dtype)(x).argmax(1)
    return x, y


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_output_in_eps_ball_and_box_and_input_unchanged(name: str) -> None:
    model = tiny_cnn()
    x, y = batch()
    x_before = x.clone()
    eps = 0.05
    result = BASELINES[name](model, eps=eps)(x, y)
    assert torch.equal(x, x_before)
    assert result.adv.shape == x.shape and result.adv.dtype == x.dtype
    assert float((result.adv - x).abs().max()) <= eps + 1e-6
    assert float(result.adv.min()) >= 0.0 and float(result.adv.max()) <= 1.0
    assert result.grad_evals >= 1 and result.wall_time_s > 0 and result.name == name


def independent_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                    steps: int) -> torch.Tensor:
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.clamp(torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps), 0, 1)
    return adv


def test_library_pgd_matches_independent_pgd() -> None:
    model = tiny_cnn(torch.float64)
    x, y = batch(8, torch.float64)
    torch.manual_seed(3)
    ours = PGD(model, eps=8 / 255, steps=20, alpha=2 / 255, random_start=False)(x, y).adv
    torch.manual_seed(3)
    reference = independent_pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=20)
    assert not torch.equal(ours, x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)


def test_pgd_defaults_follow_the_paper() -> None:
    attack = PGD(tiny_cnn())
    assert (attack.steps, attack.alpha, attack.random_start, attack.eps) == (20, 2 / 255, False, 8 / 255)


def test_gradient_counts_and_step_traces() -> None:
    model = tiny_cnn()
    x, y = batch()
    assert FGSM(model, eps=0.03)(x, y).grad_evals == 1
    pgd = PGD(model, eps=0.03, steps=7)(x, y)
    assert pgd.grad_evals == 7 and pgd.trace.grad_evals == list(range(1, 8))
    assert len(pgd.trace.predictions) == 7
    assert torch.equal(pgd.trace.predictions[-1], model(pgd.adv).argmax(1))
    asod = ASOD(model, eps=0.03, steps=3, n_samples=4, seed=0)(x, y)
    assert asod.grad_evals == 12 and asod.trace.grad_evals == [4, 8, 12]
    assert torch.equal(asod.trace.predictions[-1], model(asod.adv).argmax(1))


def test_autoattack_counts_gradients_and_square_queries() -> None:
    # ε so small that nothing is fooled: every image goes through all four attacks.
    model = tiny_cnn()
    x, y = batch(3)
    result = AutoAttack(model, eps=1e-6)(x, y)
    assert torch.equal(model(result.adv).argmax(1), y)
    # APGD-CE 10 steps + APGD-T 9 targets × 10 steps, plus FAB-T's Jacobian rows, per image.
    assert result.grad_evals > 100
    assert result.trace.gradient_images == pytest.approx(result.grad_evals * 3, abs=3)
    # Square spends 5000 queries per surviving image, as forward passes.
    assert result.trace.forward_images >= 5000 * 3


def test_counting_model_counts_every_backward_pass() -> None:
    counter = CountingModel(tiny_cnn())
    x, y = batch(5)
    x.requires_grad_(True)
    logits = counter(x)
    torch.autograd.grad(F.cross_entropy(logits, y), x, retain_graph=True)
    logits.sum().backward()
    with torch.no_grad():
        counter(x)
    assert (counter.forward_images, counter.gradient_images) == (10, 10)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("training", [True, False])
def test_model_mode_restored_and_parameters_untouched(name: str, training: bool) -> None:
    model = tiny_cnn(frozen=False)  # parameters that require grad must still get no .grad
    model.train(training)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch(3)
    BASELINES[name](model, eps=0.05)(x, y)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_seeded_attacks_are_deterministic_and_leave_global_rng_alone() -> None:
    model = tiny_cnn()
    x, y = batch()
    rng_before = torch.get_rng_state()
    first = AutoAttack(model, eps=0.03, seed=5)(x, y).adv
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(first, AutoAttack(model, eps=0.03, seed=5)(x, y).adv)
    asod = [ASOD(model, eps=0.03, steps=2, seed=9)(x, y).adv for _ in range(2)]
    assert torch.equal(asod[0], asod[1])
    pgd = [PGD(model, eps=0.03, random_start=True, seed=2)(x, y).adv for _ in range(2)]
    assert torch.equal(pgd[0], pgd[1])
    # Without a seed, random starts come from (and advance) the global RNG: two calls differ.
    unseeded = [PGD(model, eps=0.03, steps=1, random_start=True)(x, y).adv for _ in range(2)]
    assert not torch.equal(unseeded[0], unseeded[1])


@pytest.mark.parametrize("make", [
    lambda m: PGD(m, steps=0), lambda m: PGD(m, alpha=-1.0), lambda m: PGD(m, random_start="yes"),
    lambda m: ASOD(m, sigma=-0.1), lambda m: ASOD(m, n_samples=0), lambda m: AutoAttack(m, seed=-1),
    lambda m: FGSM(m, eps=-0.1),
])
def test_bad_parameters_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make(tiny_cnn())


def test_registry_and_public_api() -> None:
    from soae_core import attacks

    for name in ("FGSM", "PGD", "AutoAttack", "ASOD", "SOAE"):
        assert hasattr(attacks, name), f"soae_core.attacks.{name} is missing"
    for name, cls in BASELINES.items():
        assert ATTACKS[name] is cls


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_lowers_accuracy_of_bundled_standard_model(name: str) -> None:
    from soae_core.data import load_samples
    from soae_core.models import load_model

    model = load_model("fmnist-cnn-std")
    samples = load_samples()
    x, y = samples.images[:32], samples.labels[:32]
    clean_accuracy = (model(x).argmax(1) == y).float().mean()
    # ε = 0.1: at 8/255 about half the images stay robust and AutoAttack's Square part then spends
    # its full 5,000 queries on them (minutes on 2 CPU cores); the property is the same.
    adv = ATTACKS[name](model, eps=0.1)(x, y).adv
    robust_accuracy = (model(adv).argmax(1) == y).float().mean()
    assert robust_accuracy < clean_accuracy
