"""Adversarial attacks, all called the same way: ``Attack(model, eps=...)(x, y) -> AttackResult``."""

from soae_core.attacks.base import Attack, AttackResult, project_linf

__all__ = ["Attack", "AttackResult", "project_linf"]
