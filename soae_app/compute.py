"""What the job service's worker processes run (no Streamlit): every page's computation on a
model, as ``fn(*models, *args)``, with the models that each worker loads once by name — and
batched attacks.

A job names its models as :class:`ModelSpec` (name, dtype, weights version and path) instead of
carrying them, so a job pickles to a few kilobytes and a worker keeps each model it has loaded.
Images arrive as NumPy (C, H, W) in [0, 1]. :mod:`soae_app.cache` submits these functions.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pickle
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core.analysis import attack_lab, how_soae_works, jobs, krylov_inspector, perturbation_anatomy
from soae_core.analysis.common import image_batch
from soae_core.analysis.settings import DEFAULT_SETTINGS, AttackSettings
from soae_core.data import SampleSet, load_samples
from soae_core.models import load_model

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
    return load_model(spec.name, weights_path=spec.weights_path, dtype=DTYPES[spec.dtype])


@functools.lru_cache(maxsize=4)
def samples(dataset: str) -> SampleSet:
    """The bundled sample set of ``dataset``, loaded once per process."""
    return load_samples(dataset)


def with_models(fn: Callable[..., Any], specs: tuple[ModelSpec, ...], args: tuple) -> Any:
    """``fn(*models, *args)`` with the models of ``specs`` (loaded in this process)."""
    return fn(*(model(spec) for spec in specs), *args)


def job_key(fn: Callable[..., Any], specs: tuple[ModelSpec, ...], args: tuple) -> str:
    """A key naming the computation ``fn(models, args)``: equal keys, equal results."""
    return hashlib.sha1(pickle.dumps((fn.__module__, fn.__qualname__, specs, args))).hexdigest()


# ---------------------------------------------------------------------------------- Attack Lab
def attack(net: nn.Module, image: np.ndarray, label: int, name: str,
           kwargs: dict[str, Any]) -> tuple[attack_lab.AttackOutcome, list[attack_lab.IterationView]]:
    """:func:`soae_core.analysis.attack_lab.run_attack` of attack ``name`` on the image."""
    return attack_lab.run_attack(net, image_batch(image, net_dtype(net)), label, name, kwargs)


class AttackRequest(NamedTuple):
    """One image's attack, as a member of a batch: the model by spec, the image (C, H, W), its
    label, the attack and its keyword arguments."""

    spec: ModelSpec
    image: np.ndarray
    label: int
    name: str
    kwargs: dict[str, Any]


def attack_batch(requests: list[AttackRequest]) -> list[Any]:
    """The requests (same model, attack and settings) as one batched call: one (outcome, views)
    or ValueError per request, each what :func:`attack` gives it alone."""
    first = requests[0]
    net = model(first.spec)
    return attack_lab.run_attack_batch(net, [image_batch(r.image, net_dtype(net)) for r in requests],
                                       [r.label for r in requests], first.name, first.kwargs)


def net_dtype(net: nn.Module) -> torch.dtype:
    """The dtype of the model's parameters (float32 without any)."""
    parameter = next(net.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


# ---------------------------------------------------------------------------------- Krylov Inspector
def krylov_history(net: nn.Module, image: np.ndarray, label: int,
                   settings: AttackSettings) -> list[krylov_inspector.KrylovRecord]:
    """GMRES records of every SOAE outer iteration (with true residuals)."""
    return krylov_inspector.krylov_history(net, image_batch(image), label, settings)


def hessian_spectrum(net64: nn.Module, image: np.ndarray, label: int, max_dim: int) -> krylov_inspector.Spectrum:
    """Ritz values of the exact input Hessian (float64 copy of the model)."""
    return krylov_inspector.hessian_spectrum(net64, image_batch(image, torch.float64), label, max_dim)


def fd_accuracy(net32: nn.Module, net64: nn.Module, image: np.ndarray, label: int) -> pd.DataFrame:
    """Finite-difference vs exact Hessian-vector product error over η (every η at once)."""
    return krylov_inspector.fd_accuracy_sweep(net32, net64, image_batch(image), label)


def tau_table(net: nn.Module, image: np.ndarray, label: int, eta: float, max_dim: int) -> pd.DataFrame:
    """m(τ) for the finite-difference (step η) and exact products at the image."""
    settings = dataclasses.replace(DEFAULT_SETTINGS, eta=eta)
    return krylov_inspector.tau_to_m_table(net, image_batch(image), label, settings, max_dim=max_dim)


# ---------------------------------------------------------------------------------- How SOAE works
def loss_landscape(net: nn.Module, image: np.ndarray, label: int, settings: AttackSettings,
                   scale: float) -> how_soae_works.Landscape:
    """:func:`soae_core.analysis.how_soae_works.loss_landscape` with the sidebar's SOAE settings."""
    return how_soae_works.loss_landscape(net, image_batch(image), label, settings.soae_kwargs(), scale)


# ---------------------------------------------------------------------------------- Perturbation Anatomy
def anatomy(net: nn.Module, image: np.ndarray, label: int, advs: dict[str, np.ndarray], map_layers: list[str],
            top_channels: int, target: str) -> perturbation_anatomy.Anatomy:
    """:func:`soae_core.analysis.perturbation_anatomy.perturbation_anatomy` of the image and the
    adversarial images (C, H, W) per attack name."""
    return perturbation_anatomy.perturbation_anatomy(net, image_batch(image), label,
                                                     {name: image_batch(adv) for name, adv in advs.items()},
                                                     list(map_layers), top_channels, target)


def spatial_layers(net: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """The model's Conv2d/Linear layers whose outputs are spatial maps."""
    return perturbation_anatomy.spatial_layers(net, torch.full((1, *input_shape), 0.5))


# ---------------------------------------------------------------------------------- Compare & Sweeps, Models
def compare_batch(net: nn.Module, dataset: str, job: jobs.Job, start: int, stop: int) -> jobs.BatchOutcome:
    """``job`` on the bundled images of ``dataset`` at positions start..stop of the class-balanced
    order (:func:`soae_core.analysis.jobs.image_order`)."""
    sample_set = samples(dataset)
    positions = jobs.image_order(sample_set.labels)[start:stop]
    return jobs.run_batch(net, job, sample_set.images[positions], sample_set.labels[positions], positions)
