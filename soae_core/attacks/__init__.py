"""Adversarial attacks, all called the same way: ``Attack(model, eps=...)(x, y) -> AttackResult``."""

from typing import Any

import torch
from torch import nn

try:  # FGSM, PGD and AutoAttack run torchattacks behind our counting wrapper
    import torchattacks  # noqa: F401
except ImportError as error:  # not a declared dependency of the project: see pyproject.toml
    raise ImportError("soae_core.attacks needs torchattacks 3.5.1; install it without its dependencies: "
                      "pip install --no-deps torchattacks==3.5.1 (it pins requests~=2.25.1, which conflicts "
                      "with streamlit, and runs with a newer requests)") from error

from soae_core.attacks.asod import ASOD
from soae_core.attacks.autoattack import AutoAttack
from soae_core.attacks.base import Attack, AttackResult, project_linf
from soae_core.attacks.counting import BudgetTrace
from soae_core.attacks.fgsm import FGSM
from soae_core.attacks.pgd import PGD
from soae_core.attacks.soae import SOAE, SOAEDirection, SOAEIteration, SOAETrace, SOAEWithoutCurvature
from soae_core.validation import check_choice

# Attack name -> class, for the app and the CLI.
ATTACKS: dict[str, type[Attack]] = {"FGSM": FGSM, "PGD": PGD, "AutoAttack": AutoAttack, "ASOD": ASOD, "SOAE": SOAE,
                                   "SOAE-g": SOAEWithoutCurvature}


def make_attack(name: str, model: nn.Module, **kwargs: Any) -> Attack:
    """The attack ``name`` (a key of :data:`ATTACKS`) on ``model`` with its keyword arguments.

    Raises ValueError naming the allowed attacks for an unknown name (and as the attack does for
    bad arguments).
    """
    check_choice("attack", name, tuple(ATTACKS))
    return ATTACKS[name](model, **kwargs)


def budget_points(result: AttackResult) -> list[tuple[float, torch.Tensor]]:
    """(cumulative gradient evaluations per image, predictions (B,)) after each recorded step.

    SOAE: the mean over the batch of each image's cumulative gradient evaluations (the
    engine's per-sample counts: 1 gradient + its Hessian-vector products per iteration).
    Baselines: from their :class:`BudgetTrace`.
    """
    trace = result.trace
    if isinstance(trace, SOAETrace):
        points, spent = [], 0.0
        for it in trace.iterations:
            spent += float(it.grad_evals_per_sample.double().mean())
            points.append((spent, it.prediction))
        return points
    if isinstance(trace, BudgetTrace):
        return [(float(g), p) for g, p in zip(trace.grad_evals, trace.predictions, strict=False)]
    raise ValueError(f"cannot read a budget curve from a {type(trace).__name__} trace")


__all__ = ["ATTACKS", "ASOD", "Attack", "AttackResult", "AutoAttack", "FGSM", "PGD", "SOAE", "SOAEDirection",
           "SOAEIteration", "SOAETrace", "SOAEWithoutCurvature", "budget_points", "make_attack", "project_linf"]
