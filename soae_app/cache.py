"""Streamlit caches of every page.

Models are loaded once per process and shared by every browser tab (``st.cache_resource``): they
are in eval mode with frozen parameters, and the library only takes input gradients
(``torch.autograd.grad``/``torch.func``), so concurrent sessions cannot disturb each other.
Results are cached per input (``st.cache_data``, keyed on every argument): a rerun with the same
model, image, label and settings costs a dictionary look-up. Each attack is cached on its own, so
changing a setting only SOAE uses (η, τ, …) does not rerun the baselines, and vice versa. Compare
runs are cached one (job, batch) unit at a time: a stopped run resumes where it stopped, and any
session asking for the same unit gets it without recomputing.

A model is keyed by name, dtype and its weights file's size and modification time, so a
retrained checkpoint is picked up without restarting the app. Every cached computation on a
model has one shape, made by :func:`per_model`: ``f(info, *args)``, computed as
``compute(model, *args)`` on the shared model. Images arrive as NumPy (C, H, W) in [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

from soae_core.analysis import attack_lab, how_soae_works, jobs, krylov_inspector, perturbation_anatomy
from soae_core.analysis.common import image_batch
from soae_core.analysis.settings import DEFAULT_SETTINGS, AttackSettings
from soae_core.data import SampleSet, load_photo, load_samples
from soae_core.models import ModelInfo, load_model

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def weights_version(info: ModelInfo) -> str:
    """Identifies the weights file's current content cheaply: 'size:mtime' ('' if none)."""
    if info.weights_path is None or not Path(info.weights_path).is_file():
        return ""
    stat = Path(info.weights_path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _model(name: str, dtype_name: str, version: str) -> nn.Module:
    del version  # part of the cache key only
    return load_model(name, dtype=_DTYPES[dtype_name])


def model(info: ModelInfo, dtype_name: str = "float32") -> nn.Module:
    """The shared, frozen, eval-mode model of ``info`` in float32 or float64 (ValueError if unavailable)."""
    return _model(info.name, dtype_name, weights_version(info))


@st.cache_resource(show_spinner=False)
def samples(dataset: str) -> SampleSet:
    """The bundled sample set of ``dataset`` (shared, read-only)."""
    return load_samples(dataset)


@st.cache_data(show_spinner=False, max_entries=32)
def photo(name: str, input_shape: tuple[int, int, int]) -> np.ndarray:
    """A scikit-image photograph at the model's input shape, (C, H, W) float32 in [0, 1]."""
    return load_photo(name, input_shape)[0].numpy()


def per_model(max_entries: int, dtypes: tuple[str, ...] = ("float32",)) -> Callable[[Callable], Callable]:
    """Decorator: cache ``compute(model, *args)`` with ``st.cache_data`` per (model name, weights
    version, args) and call it as ``compute(info, *args)`` with the model's :class:`ModelInfo`.

    ``dtypes``: the copies of the shared model ``compute`` takes first ("float32", "float64" or both).
    """
    def decorate(compute: Callable) -> Callable:
        def cached(model_name: str, version: str, *args: Any, **kwargs: Any) -> Any:
            return compute(*(_model(model_name, dtype, version) for dtype in dtypes), *args, **kwargs)

        # Streamlit keys a cache by its function's module, qualified name and source; the source of
        # ``cached`` is the same for every computation, so the name keeps their caches apart.
        cached.__module__, cached.__qualname__ = compute.__module__, f"per_model.{compute.__qualname__}"
        cached_data = st.cache_data(show_spinner=False, max_entries=max_entries)(cached)

        def on_model(info: ModelInfo, *args: Any, **kwargs: Any) -> Any:
            return cached_data(info.name, weights_version(info), *args, **kwargs)

        on_model.__name__, on_model.__qualname__ = compute.__name__, compute.__qualname__
        on_model.__doc__ = compute.__doc__
        on_model.clear = cached_data.clear  # type: ignore[attr-defined]
        return on_model
    return decorate


# ---------------------------------------------------------------------------------- Attack Lab
@per_model(max_entries=256)
def attack(net: nn.Module, image: np.ndarray, label: int, name: str,
           kwargs: dict[str, Any]) -> tuple[attack_lab.AttackOutcome, list[attack_lab.IterationView]]:
    """:func:`soae_core.analysis.attack_lab.run_attack` of attack ``name`` with keyword arguments
    ``kwargs`` on the image, cached on the attack's own arguments only."""
    return attack_lab.run_attack(net, image_batch(image), label, name, kwargs)


def lab_run(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings,
            on_attack: Callable[[str], None] | None = None) -> attack_lab.LabRun:
    """:func:`soae_core.analysis.attack_lab.run_lab` on the image, every attack from :func:`attack`."""
    def run(name: str, kwargs: dict[str, Any]) -> tuple[attack_lab.AttackOutcome, list[attack_lab.IterationView]]:
        return attack(info, image, label, name, kwargs)

    return attack_lab.run_lab(model(info), image_batch(image), label, settings, info.dataset, info.class_names,
                              run=run, on_attack=on_attack)


# ---------------------------------------------------------------------------------- Krylov Inspector
@per_model(max_entries=64)
def _krylov_history(net: nn.Module, image: np.ndarray, label: int,
                    settings: AttackSettings) -> list[krylov_inspector.KrylovRecord]:
    return krylov_inspector.krylov_history(net, image_batch(image), label, settings)


def krylov_history(info: ModelInfo, image: np.ndarray, label: int,
                   settings: AttackSettings) -> list[krylov_inspector.KrylovRecord]:
    """GMRES records of every SOAE outer iteration (with true residuals), cached on SOAE's settings."""
    return _krylov_history(info, image, label, dataclasses.replace(settings, baselines=()))


@per_model(max_entries=64, dtypes=("float64",))
def hessian_spectrum(net64: nn.Module, image: np.ndarray, label: int, max_dim: int) -> krylov_inspector.Spectrum:
    """Ritz values of the exact input Hessian (float64 copy of the model), cached per input."""
    return krylov_inspector.hessian_spectrum(net64, image_batch(image, torch.float64), label, max_dim)


@per_model(max_entries=64, dtypes=("float32", "float64"))
def fd_accuracy(net32: nn.Module, net64: nn.Module, image: np.ndarray, label: int) -> pd.DataFrame:
    """Finite-difference vs exact Hessian-vector product error over η (every η at once), cached per input."""
    return krylov_inspector.fd_accuracy_sweep(net32, net64, image_batch(image), label)


@per_model(max_entries=64)
def tau_table(net: nn.Module, image: np.ndarray, label: int, eta: float, max_dim: int) -> pd.DataFrame:
    """m(τ) for the finite-difference (step η) and exact products at the image, cached per input."""
    settings = dataclasses.replace(DEFAULT_SETTINGS, eta=eta)
    return krylov_inspector.tau_to_m_table(net, image_batch(image), label, settings, max_dim=max_dim)


@per_model(max_entries=64)
def _margin_gains(net: nn.Module, image: np.ndarray, label: int, settings: AttackSettings,
                  class_names: tuple[str, ...]) -> pd.DataFrame:
    return krylov_inspector.class_margin_gains(net, image_batch(image), label, settings, class_names)


def margin_gains(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings) -> pd.DataFrame:
    """Per wrong class, the gain of SOAE's first step along g and along δ̃
    (:func:`soae_core.analysis.krylov_inspector.class_margin_gains`), cached on SOAE's settings."""
    soae_only = dataclasses.replace(settings, baselines=())
    return _margin_gains(info, image, label, soae_only, tuple(info.class_names))


# ---------------------------------------------------------------------------------- How SOAE works
@st.cache_resource(show_spinner="Training the 2-D toy classifier…")
def toy_classifier(activation: str) -> how_soae_works.ToyClassifier:
    """The 2-D toy classifier (trained once per process, shared, frozen)."""
    return how_soae_works.toy_classifier(activation)


@st.cache_data(show_spinner=False, max_entries=8)
def toy_grid(activation: str, label: int, resolution: int) -> how_soae_works.LossGrid:
    """Loss of class ``label`` and decision regions of the toy on the unit square."""
    return how_soae_works.loss_grid(toy_classifier(activation).model, label, resolution)


@st.cache_data(show_spinner=False, max_entries=64)
def toy_step(activation: str, point: tuple[float, float], label: int, eps: float) -> how_soae_works.ToyStep:
    """:func:`soae_core.analysis.how_soae_works.second_order_step` at ``point``."""
    return how_soae_works.second_order_step(toy_classifier(activation).model, point, label, eps=eps)


@per_model(max_entries=32)
def loss_landscape(net: nn.Module, image: np.ndarray, label: int, settings: AttackSettings,
                   scale: float) -> how_soae_works.Landscape:
    """:func:`soae_core.analysis.how_soae_works.loss_landscape` with the sidebar's SOAE settings, cached per input."""
    return how_soae_works.loss_landscape(net, image_batch(image), label, settings.soae_kwargs(), scale)


# ---------------------------------------------------------------------------------- Perturbation Anatomy
@per_model(max_entries=64)
def anatomy(net: nn.Module, image: np.ndarray, label: int, advs: dict[str, np.ndarray], map_layers: list[str],
            top_channels: int, target: str) -> perturbation_anatomy.Anatomy:
    """:func:`soae_core.analysis.perturbation_anatomy.perturbation_anatomy` of the image and the
    adversarial images (C, H, W) per attack name, cached per input."""
    return perturbation_anatomy.perturbation_anatomy(net, image_batch(image), label,
                                                     {name: image_batch(adv) for name, adv in advs.items()},
                                                     list(map_layers), top_channels, target)


@per_model(max_entries=16)
def spatial_layers(net: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """The model's Conv2d/Linear layers whose outputs are spatial maps, cached per model."""
    return perturbation_anatomy.spatial_layers(net, torch.full((1, *input_shape), 0.5))


# ---------------------------------------------------------------------------------- Compare & Sweeps, Models
@per_model(max_entries=512)
def compare_batch(net: nn.Module, dataset: str, job: jobs.Job, start: int, stop: int) -> jobs.BatchOutcome:
    """``job`` on the bundled images of ``dataset`` at positions start..stop of the class-balanced
    order (:func:`soae_core.analysis.jobs.image_order`), cached per unit."""
    sample_set = samples(dataset)
    positions = jobs.image_order(sample_set.labels)[start:stop]
    return jobs.run_batch(net, job, sample_set.images[positions], sample_set.labels[positions], positions)
