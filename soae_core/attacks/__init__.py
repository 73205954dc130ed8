"""Adversarial attacks, all called the same way: ``Attack(model, eps=...)(x, y) -> AttackResult``."""

from soae_core.attacks.asod import ASOD
from soae_core.attacks.autoattack import AutoAttack
from soae_core.attacks.base import Attack, AttackResult, project_linf
from soae_core.attacks.fgsm import FGSM
from soae_core.attacks.pgd import PGD
from soae_core.attacks.soae import SOAE, SOAEIteration, SOAETrace, SOAEWithoutCurvature

# Attack name -> class, for the app and the CLI.
ATTACKS: dict[str, type[Attack]] = {"FGSM": FGSM, "PGD": PGD, "AutoAttack": AutoAttack, "ASOD": ASOD, "SOAE": SOAE,
                                   "SOAE-g": SOAEWithoutCurvature}

__all__ = ["ATTACKS", "ASOD", "Attack", "AttackResult", "AutoAttack", "FGSM", "PGD", "SOAE", "SOAEIteration", "SOAETrace",
           "SOAEWithoutCurvature", "project_linf"]
