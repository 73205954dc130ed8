"""Streamlit caches.

Models are loaded once per process and shared by every browser tab (``st.cache_resource``): they
are in eval mode with frozen parameters, and the library only takes input gradients
(``torch.autograd.grad``/``torch.func``), so concurrent sessions cannot disturb each other.
Results are cached per input (``st.cache_data``, keyed on every argument): a rerun with the same
model, image, label and settings costs a dictionary look-up. Each attack is cached on its own, so
changing a setting only SOAE uses (η, τ, …) does not rerun the baselines, and vice versa.

A model is keyed by name, dtype and its weights file's size and modification time, so a
retrained checkpoint is picked up without restarting the app.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

from soae_core import krylov_diagnostics
from soae_core.app_settings import DEFAULT_SETTINGS, AttackSettings
from soae_core.data import SampleSet, load_photo, load_samples
from soae_core.lab import AttackOutcome, IterationView, run_attack
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


def _tensor(image: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).to(dtype).unsqueeze(0)


@st.cache_data(show_spinner=False, max_entries=256)
def _attack(model_name: str, version: str, image: np.ndarray, label: int, name: str,
            kwargs: dict[str, Any]) -> tuple[AttackOutcome, list[IterationView]]:
    return run_attack(_model(model_name, "float32", version), _tensor(image), label, name, kwargs)


def attack(info: ModelInfo, image: np.ndarray, label: int, name: str,
           settings: AttackSettings) -> tuple[AttackOutcome, list[IterationView]]:
    """``soae_core.lab.run_attack`` of attack ``name`` on the image (C, H, W), cached on the
    attack's own keyword arguments only."""
    kwargs = settings.attack_kwargs(name, info.dataset)
    return _attack(info.name, weights_version(info), image, label, name, kwargs)


@st.cache_data(show_spinner=False, max_entries=64)
def _krylov_history(model_name: str, version: str, image: np.ndarray, label: int,
                    settings: AttackSettings) -> list[krylov_diagnostics.KrylovRecord]:
    return krylov_diagnostics.krylov_history(_model(model_name, "float32", version), _tensor(image), label, settings)


def krylov_history(info: ModelInfo, image: np.ndarray, label: int,
                   settings: AttackSettings) -> list[krylov_diagnostics.KrylovRecord]:
    """GMRES records of every SOAE outer iteration (with true residuals), cached on SOAE's settings."""
    soae_only = dataclasses.replace(settings, baselines=())
    return _krylov_history(info.name, weights_version(info), image, label, soae_only)


@st.cache_data(show_spinner=False, max_entries=64)
def _hessian_spectrum(model_name: str, version: str, image: np.ndarray, label: int,
                      max_dim: int) -> krylov_diagnostics.Spectrum:
    net = _model(model_name, "float64", version)
    return krylov_diagnostics.hessian_spectrum(net, _tensor(image, torch.float64), label, max_dim)


def hessian_spectrum(info: ModelInfo, image: np.ndarray, label: int, max_dim: int) -> krylov_diagnostics.Spectrum:
    """Ritz values of the exact input Hessian (float64 copy of the model), cached per input."""
    return _hessian_spectrum(info.name, weights_version(info), image, label, max_dim)


@st.cache_data(show_spinner=False, max_entries=64)
def _fd_accuracy(model_name: str, version: str, image: np.ndarray, label: int) -> pd.DataFrame:
    net32, net64 = _model(model_name, "float32", version), _model(model_name, "float64", version)
    return krylov_diagnostics.fd_accuracy_sweep(net32, net64, _tensor(image), label)


def fd_accuracy(info: ModelInfo, image: np.ndarray, label: int) -> pd.DataFrame:
    """Finite-difference vs exact Hessian-vector product error over η (every η at once), cached per input."""
    return _fd_accuracy(info.name, weights_version(info), image, label)


@st.cache_data(show_spinner=False, max_entries=64)
def _tau_table(model_name: str, version: str, image: np.ndarray, label: int, eta: float,
               max_dim: int) -> pd.DataFrame:
    settings = dataclasses.replace(DEFAULT_SETTINGS, eta=eta)
    return krylov_diagnostics.tau_to_m_table(_model(model_name, "float32", version), _tensor(image), label,
                                             settings, max_dim=max_dim)


def tau_table(info: ModelInfo, image: np.ndarray, label: int, eta: float, max_dim: int) -> pd.DataFrame:
    """m(τ) for the finite-difference (step η) and exact products at the image, cached per input."""
    return _tau_table(info.name, weights_version(info), image, label, eta, max_dim)


@st.cache_data(show_spinner=False, max_entries=64)
def _margin_gains(model_name: str, version: str, image: np.ndarray, label: int, settings: AttackSettings,
                  class_names: tuple[str, ...]) -> pd.DataFrame:
    return krylov_diagnostics.class_margin_gains(_model(model_name, "float32", version), _tensor(image), label,
                                                 settings, class_names)


def margin_gains(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings,
                 class_names: tuple[str, ...]) -> pd.DataFrame:
    """Per wrong class, the gain of SOAE's first step along g and along δ̃, cached on SOAE's settings."""
    soae_only = dataclasses.replace(settings, baselines=())
    return _margin_gains(info.name, weights_version(info), image, label, soae_only, tuple(class_names))
