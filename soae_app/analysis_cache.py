"""Streamlit caches of the analysis pages (Perturbation Anatomy, Compare & Sweeps, Models, How
SOAE works), beside :mod:`soae_app.cache` whose shared models and per-attack results they reuse.

Results are cached per input with ``st.cache_data`` (every argument is part of the key, the
model by name and weights version), so a warm rerun costs dictionary look-ups. Compare runs are
cached one (job, batch) unit at a time: a stopped run resumes where it stopped, and any session
asking for the same unit gets it without recomputing.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from soae_app import cache
from soae_core import compare, landscape, toy2d
from soae_core.anatomy import Anatomy, perturbation_anatomy, spatial_layers as find_spatial_layers
from soae_core.app_settings import AttackSettings
from soae_core.models import ModelInfo, get_model_info


def _net(model_name: str) -> torch.nn.Module:
    return cache.model(get_model_info(model_name))


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).unsqueeze(0)


@st.cache_data(show_spinner=False, max_entries=64)
def _anatomy(model_name: str, version: str, image: np.ndarray, label: int, advs: tuple[tuple[str, np.ndarray], ...],
             map_layers: tuple[str, ...], top_channels: int, target: str) -> Anatomy:
    del version  # part of the cache key only
    return perturbation_anatomy(_net(model_name), _tensor(image), label, {name: _tensor(adv) for name, adv in advs},
                                list(map_layers), top_channels, target)


def anatomy(info: ModelInfo, image: np.ndarray, label: int, advs: dict[str, np.ndarray], map_layers: list[str],
            top_channels: int, target: str) -> Anatomy:
    """:func:`soae_core.anatomy.perturbation_anatomy` of the image (C, H, W) and the adversarial
    images (C, H, W) per attack name, cached per input."""
    return _anatomy(info.name, cache.weights_version(info), image, label, tuple(advs.items()), tuple(map_layers),
                    top_channels, target)


@st.cache_data(show_spinner=False, max_entries=16)
def _spatial_layers(model_name: str, version: str, input_shape: tuple[int, int, int]) -> list[str]:
    del version
    return find_spatial_layers(_net(model_name), torch.full((1, *input_shape), 0.5))


def spatial_layers(info: ModelInfo) -> list[str]:
    """The model's Conv2d/Linear layers whose outputs are spatial maps, cached per model."""
    return _spatial_layers(info.name, cache.weights_version(info), info.input_shape)


@st.cache_data(show_spinner=False, max_entries=512)
def _batch(model_name: str, version: str, dataset: str, job: compare.Job, start: int, stop: int) -> compare.BatchOutcome:
    del version
    sample_set = cache.samples(dataset)
    positions = compare.image_order(sample_set.labels)[start:stop]
    return compare.run_batch(_net(model_name), job, sample_set.images[positions], sample_set.labels[positions],
                             positions)


def compare_batch(info: ModelInfo, job: compare.Job, start: int, stop: int) -> compare.BatchOutcome:
    """``job`` on the bundled images at positions start..stop of the class-balanced order
    (:func:`soae_core.compare.image_order`), cached per unit."""
    return _batch(info.name, cache.weights_version(info), info.dataset, job, start, stop)


@st.cache_resource(show_spinner="Training the 2-D toy classifier…")
def toy_classifier(activation: str) -> toy2d.ToyClassifier:
    """The 2-D toy classifier (trained once per process, shared, frozen)."""
    return toy2d.toy_classifier(activation)


@st.cache_data(show_spinner=False, max_entries=8)
def toy_grid(activation: str, label: int, resolution: int) -> toy2d.LossGrid:
    """Loss of class ``label`` and decision regions of the toy on the unit square."""
    return toy2d.loss_grid(toy_classifier(activation).model, label, resolution)


@st.cache_data(show_spinner=False, max_entries=64)
def toy_step(activation: str, point: tuple[float, float], label: int, eps: float) -> toy2d.ToyStep:
    """:func:`soae_core.toy2d.second_order_step` at ``point``."""
    return toy2d.second_order_step(toy_classifier(activation).model, point, label, eps=eps)


@st.cache_data(show_spinner=False, max_entries=32)
def _landscape(model_name: str, version: str, image: np.ndarray, label: int, settings: AttackSettings,
               radius: float, line_points: int, plane_points: int
               ) -> tuple[landscape.LossLine, landscape.LossLine, landscape.LossPlane]:
    del version
    net, x = _net(model_name), _tensor(image)
    directions = landscape.soae_directions(net, x, label, settings.soae_kwargs())
    along_gradient = landscape.loss_along_line(net, x, label, directions.gradient, radius, line_points)
    along_soae = landscape.loss_along_line(net, x, label, directions.soae_direction, radius, line_points)
    plane = landscape.loss_on_plane(net, x, label, directions, radius, plane_points)
    return along_gradient, along_soae, plane


def loss_landscape(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings, radius: float,
                   line_points: int = 61, plane_points: int = 31
                   ) -> tuple[landscape.LossLine, landscape.LossLine, landscape.LossPlane]:
    """The loss along g, along SOAE's H⁻¹g (with the sidebar's SOAE settings) and on their plane,
    each with its quadratic model; cached per input."""
    return _landscape(info.name, cache.weights_version(info), image, label, settings, radius, line_points,
                      plane_points)
