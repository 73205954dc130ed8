"""What the job service's worker processes run (no Streamlit): every page's computation on a
model, as ``fn(*models, *args)``, with the models that each worker loads once by name — and
batched attacks.

A job names its models as :class:`ModelSpec` (name, dtype, weights version and path) instead of
carrying them, so a job pickles to a few kilobytes and a worker keeps each model it has loaded.
Images arrive as NumPy (C, H, W) in [0, 1] and go to the model's device (:func:`batch`); every
result leaves the device through :func:`soae_core.device.to_cpu` in :func:`with_models`.
:mod:`soae_app.cache` submits these functions.
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

from soae_core import transfer
from soae_core.analysis import attack_lab, how_soae_works, jobs, krylov_inspector, perturbation_anatomy, target_grid
from soae_core.analysis.common import image_batch
from soae_core.analysis.settings import DEFAULT_SETTINGS, PRECISIONS, AttackSettings
from soae_core.data import SampleSet, load_samples
from soae_core.device import to_cpu
from soae_core.krylov import prepare_host_loop
from soae_core.models import load_model

DTYPES = {name: getattr(torch, name) for name in PRECISIONS}  # the precisions' names → dtypes


class ModelSpec(NamedTuple):
    """A model as a job names it: registry name, "float32" or "float64", its weights file's
    version (size:mtime, so a retrained checkpoint is a different model), path (None: the
    registry's default; a worker's environment may differ from the server's) and device ("cpu",
    "cuda:0", … — the server's, from :mod:`soae_core.device`; part of every job's key)."""

    name: str
    dtype: str
    version: str
    weights_path: str | None = None
    device: str = "cpu"


def prepare_worker() -> None:
    """Run once in each worker process before its first job (worker_pool's preload): compiles, or
    loads from numba's disk cache, the single-image GMRES kernels, which a student's first SOAE
    would otherwise wait for."""
    prepare_host_loop()


@functools.lru_cache(maxsize=16)
def model(spec: ModelSpec) -> nn.Module:
    """The frozen eval-mode model of ``spec``, loaded once per process."""
    torch.set_num_threads(int(os.environ.get("SOAE_TORCH_THREADS", "1")))
    return load_model(spec.name, weights_path=spec.weights_path, dtype=DTYPES[spec.dtype], device=spec.device)


@functools.lru_cache(maxsize=4)
def samples(dataset: str) -> SampleSet:
    """The bundled sample set of ``dataset``, loaded once per process."""
    return load_samples(dataset)


def with_models(fn: Callable[..., Any], specs: tuple[ModelSpec, ...], args: tuple) -> Any:
    """``fn(*models, *args)`` with the models of ``specs`` (loaded in this process), moved to the CPU."""
    return to_cpu(fn(*(model(spec) for spec in specs), *args))  # the one exit from the device


def job_key(fn: Callable[..., Any], specs: tuple[ModelSpec, ...], args: tuple) -> str:
    """A key naming the computation ``fn(models, args)``: equal keys, equal results."""
    return hashlib.sha1(pickle.dumps((fn.__module__, fn.__qualname__, specs, args))).hexdigest()


# ---------------------------------------------------------------------------------- Attack Lab
def attack(net: nn.Module, image: np.ndarray, label: int, name: str, kwargs: dict[str, Any],
           target: int | None = None) -> tuple[attack_lab.AttackOutcome, list[attack_lab.IterationView]]:
    """:func:`soae_core.analysis.attack_lab.run_attack` of attack ``name`` on the image (aimed at
    ``target`` when targeted)."""
    return attack_lab.run_attack(net, batch(image, net), label, name, kwargs, target)


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
    return attack_lab.run_attack_batch(net, [batch(r.image, net) for r in requests],
                                       [r.label for r in requests], first.name, first.kwargs)


def net_dtype(net: nn.Module) -> torch.dtype:
    """The dtype of the model's parameters (float32 without any)."""
    parameter = next(net.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


def model_device(net: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU without any)."""
    parameter = next(net.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def batch(image: np.ndarray, net: nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The image (C, H, W) as a batch (1, C, H, W) of ``dtype`` (default: the model's) on the model's device."""
    return image_batch(image, dtype or net_dtype(net), model_device(net))


def transfer_table(*models_then_request: Any) -> pd.DataFrame:
    """:func:`soae_core.analysis.attack_lab.transfer_table` as a pool job: the models (one per
    name of the request, in order), then the request ``(names, run, outcome, source)``."""
    *nets, (names, run, outcome, source) = models_then_request
    return attack_lab.transfer_table(dict(zip(names, nets, strict=True)), run, outcome, source)


class TransferRequest(NamedTuple):
    """One transfer table, as a member of a batch: the models by spec (in table order) and what
    :func:`transfer_table` takes after them, ``(names, run, outcome, source)``."""

    specs: tuple[ModelSpec, ...]
    request: tuple


def transfer_batch(requests: list[TransferRequest]) -> list[Any]:
    """Several students' transfer tables on the same models as one call: one table, or the
    ValueError it raises, per request (the models are looked up once; each table is what
    :func:`transfer_table` gives it alone — the same forward passes)."""
    nets = [model(spec) for spec in requests[0].specs]
    results: list[Any] = []
    for member in requests:
        try:
            results.append(transfer_table(*nets, member.request))
        except ValueError as error:
            results.append(error)
    return results


# ---------------------------------------------------------------------------------- Source × target grid
def grid_row(net: nn.Module, image: np.ndarray, source_class: int, attack: str,
             kwargs: dict[str, Any]) -> target_grid.GridRow:
    """:func:`soae_core.analysis.target_grid.grid_row`: one source image towards every class."""
    return target_grid.grid_row(net, batch(image, net), source_class, attack, kwargs)


# ---------------------------------------------------------------------------------- Krylov Inspector
# Each takes ``target``: the class of a targeted attack (its loss is analysed), None when untargeted.
def krylov_history(net: nn.Module, image: np.ndarray, label: int, settings: AttackSettings,
                   target: int | None = None) -> list[krylov_inspector.KrylovRecord]:
    """GMRES records of every SOAE outer iteration (with true residuals)."""
    return krylov_inspector.krylov_history(net, batch(image, net), label, settings, target)


def margin_gains(net: nn.Module, image: np.ndarray, label: int, settings: AttackSettings,
                 class_names: tuple[str, ...], target: int | None = None) -> pd.DataFrame:
    """Per wrong class, the first-order gain of SOAE's first step along g and along δ̃."""
    return krylov_inspector.class_margin_gains(net, batch(image, net), label, settings, class_names, target)


def hessian_spectrum(net64: nn.Module, image: np.ndarray, label: int, max_dim: int,
                     target: int | None = None) -> krylov_inspector.Spectrum:
    """Ritz values of the exact input Hessian (float64 copy of the model)."""
    return krylov_inspector.hessian_spectrum(net64, batch(image, net64), label, max_dim, target)


def fd_accuracy(net32: nn.Module, net64: nn.Module, image: np.ndarray, label: int,
                target: int | None = None) -> pd.DataFrame:
    """Finite-difference vs exact Hessian-vector product error over η (every η at once)."""
    return krylov_inspector.fd_accuracy_sweep(net32, net64, batch(image, net32), label, target=target)


def tau_table(net: nn.Module, image: np.ndarray, label: int, eta: float, max_dim: int,
              target: int | None = None) -> pd.DataFrame:
    """m(τ) for the finite-difference (step η) and exact products at the image."""
    settings = dataclasses.replace(DEFAULT_SETTINGS, eta=eta)
    return krylov_inspector.tau_to_m_table(net, batch(image, net), label, settings, max_dim=max_dim, target=target)


# ---------------------------------------------------------------------------------- How SOAE works
def loss_landscape(net: nn.Module, image: np.ndarray, label: int, settings: AttackSettings,
                   scale: float, target: int | None = None) -> how_soae_works.Landscape:
    """:func:`soae_core.analysis.how_soae_works.loss_landscape` with the sidebar's SOAE settings
    (of the target's loss when ``target`` is given)."""
    return how_soae_works.loss_landscape(net, batch(image, net), label, settings.soae_kwargs(), scale, target)


# ---------------------------------------------------------------------------------- Perturbation Anatomy
def anatomy(net: nn.Module, image: np.ndarray, label: int, advs: dict[str, np.ndarray], map_layers: list[str],
            top_channels: int, attribute: str, target: int | None = None) -> perturbation_anatomy.Anatomy:
    """:func:`soae_core.analysis.perturbation_anatomy.perturbation_anatomy` of the image and the
    adversarial images (C, H, W) per attack name (aimed at ``target`` when targeted)."""
    return perturbation_anatomy.perturbation_anatomy(net, batch(image, net), label,
                                                     {name: batch(adv, net) for name, adv in advs.items()},
                                                     list(map_layers), top_channels, attribute, target)


def spatial_layers(net: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """The model's Conv2d/Linear layers whose outputs are spatial maps."""
    return perturbation_anatomy.spatial_layers(net, batch(np.full(input_shape, 0.5, dtype=np.float32), net))


# ---------------------------------------------------------------------------------- Compare & Sweeps, Models
def compare_batch(net: nn.Module, dataset: str, job: jobs.Job, start: int, stop: int) -> jobs.BatchOutcome:
    """``job`` on the bundled images of ``dataset`` at positions start..stop of the class-balanced
    order (:func:`soae_core.analysis.jobs.image_order`)."""
    sample_set = samples(dataset)
    positions = jobs.image_order(sample_set.labels)[start:stop]
    where = model_device(net)
    return jobs.run_batch(net, job, sample_set.images[positions].to(where), sample_set.labels[positions].to(where),
                          positions)


def compare_images(dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` bundled images of ``dataset`` and their labels in the class-balanced order."""
    sample_set = samples(dataset)
    positions = jobs.image_order(sample_set.labels)[:n]
    return sample_set.images[positions], sample_set.labels[positions]


def transfer_examples(net: nn.Module, dataset: str, n: int, attack: str, kwargs: dict[str, Any],
                      kept: tuple[int, ...] | None = None, targets: tuple[int, ...] | None = None) -> np.ndarray:
    """:func:`soae_core.transfer.adversarial_examples` of ``attack`` on this model for the first ``n``
    bundled images of ``dataset`` in the class-balanced order — those at positions ``kept`` of
    them (default: all) — aimed at ``targets`` (one per kept image) when given; (n', C, H, W) float32."""
    images, labels = compare_images(dataset, n)
    if kept is not None:
        images, labels = images[list(kept)], labels[list(kept)]
    where = model_device(net)
    goal = None if targets is None else torch.tensor(targets, dtype=torch.long, device=where)
    return transfer.adversarial_examples(net, images.to(where), labels.to(where), attack, kwargs,
                                         goal).float().cpu().numpy()
