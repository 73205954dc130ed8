"""What the job service's worker processes run (no Streamlit): library functions applied to
models that each worker loads once by name, and batched attacks.

A job names its models as :class:`ModelSpec` (name, dtype, weights version) instead of carrying
them, so a job pickles to a few kilobytes and a worker keeps each model it has loaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from soae_core import compare, landscape as loss_landscape
from soae_core.anatomy import Anatomy, perturbation_anatomy
from soae_core.app_settings import AttackSettings
from soae_core.data import load_samples
from soae_core.krylov_diagnostics import tau_to_m_table
from soae_core.lab import run_attack, run_attack_batch
from soae_core.models import load_model

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ModelSpec(NamedTuple):
    """A model as a job names it: registry name, "float32" or "float64", its weights file's
    version (size:mtime, so a retrained checkpoint is a different model) and path (None: the
    registry's default; a worker's environment may differ from the server's)."""

    name: str
    dtype: str
    version: str
    weights_path: str | None = None


@functools.lru_cache(maxsize=16)
def model(spec: ModelSpec) -> nn.Module:
    """The frozen eval-mode model of ``spec``, loaded once per process."""
    torch.set_num_threads(int(os.environ.get("SOAE_TORCH_THREADS", "1")))
    return load_model(spec.name, weights_path=spec.weights_path, dtype=_DTYPES[spec.dtype])


def tensor(image: np.ndarray, dtype: str = "float32") -> torch.Tensor:
    """(C, H, W) array → (1, C, H, W) tensor of ``dtype``."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(_DTYPES[dtype]).unsqueeze(0)


def with_models(fn: Callable[..., Any], specs: tuple[ModelSpec, ...], args: tuple) -> Any:
    """``fn(*models, *args)`` with the models of ``specs`` (loaded in this process)."""
    return fn(*(model(spec) for spec in specs), *args)


def job_key(fn: Callable[..., Any], specs: tuple[ModelSpec, ...], args: tuple) -> str:
    """A key naming the computation ``fn(models, args)``: equal keys, equal results."""
    return hashlib.sha1(pickle.dumps((fn.__module__, fn.__qualname__, specs, args))).hexdigest()


class AttackRequest(NamedTuple):
    """One image's attack: what :func:`soae_core.lab.run_attack` needs, models by spec."""

    spec: ModelSpec
    image: np.ndarray
    label: int
    name: str
    kwargs: dict[str, Any]


def attack(request: AttackRequest) -> tuple[Any, list]:
    """:func:`soae_core.lab.run_attack` of the request alone."""
    return run_attack(model(request.spec), tensor(request.image, request.spec.dtype), request.label, request.name,
                      request.kwargs)


def attack_batch(requests: list[AttackRequest]) -> list[Any]:
    """The requests (same model, attack and settings) as one batched call: one (outcome, views)
    or ValueError per request, each as :func:`attack` would give it alone."""
    first = requests[0]
    return run_attack_batch(model(first.spec), [tensor(r.image, r.spec.dtype) for r in requests],
                            [r.label for r in requests], first.name, first.kwargs)


def tau_table(net: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings, max_dim: int) -> Any:
    """:func:`soae_core.krylov_diagnostics.tau_to_m_table` with the Krylov cap as a positional argument."""
    return tau_to_m_table(net, image, label, settings, max_dim=max_dim)


@functools.lru_cache(maxsize=4)
def _samples(dataset: str) -> Any:
    return load_samples(dataset)


def compare_unit(net: nn.Module, dataset: str, job: compare.Job, start: int, stop: int) -> compare.BatchOutcome:
    """``job`` on the bundled images at positions start..stop of the class-balanced order."""
    sample_set = _samples(dataset)
    positions = compare.image_order(sample_set.labels)[start:stop]
    return compare.run_batch(net, job, sample_set.images[positions], sample_set.labels[positions], positions)


def anatomy(net: nn.Module, image: np.ndarray, label: int, advs: tuple[tuple[str, np.ndarray], ...],
            map_layers: tuple[str, ...], top_channels: int, target: str) -> Anatomy:
    """:func:`soae_core.anatomy.perturbation_anatomy` of (C, H, W) arrays."""
    return perturbation_anatomy(net, tensor(image), label, {name: tensor(adv) for name, adv in advs},
                                list(map_layers), top_channels, target)


def landscape(net: nn.Module, image: np.ndarray, label: int, settings: AttackSettings, radius: float,
              line_points: int, plane_points: int) -> tuple[Any, Any, Any]:
    """The loss along g, along SOAE's H⁻¹g and on their plane (see soae_core.landscape)."""
    x = tensor(image)
    directions = loss_landscape.soae_directions(net, x, label, settings.soae_kwargs())
    along_gradient = loss_landscape.loss_along_line(net, x, label, directions.gradient, radius, line_points)
    along_soae = loss_landscape.loss_along_line(net, x, label, directions.soae_direction, radius, line_points)
    plane = loss_landscape.loss_on_plane(net, x, label, directions, radius, plane_points)
    return along_gradient, along_soae, plane
