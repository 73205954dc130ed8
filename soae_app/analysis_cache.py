"""Streamlit caches of the analysis pages (Perturbation Anatomy, Compare & Sweeps, Models, How
SOAE works), beside :mod:`soae_app.cache` whose shared models and per-attack results they reuse.

The anatomy, the loss landscape and the Compare units run in the job service
(:mod:`soae_app.jobs`: worker processes, cached per input, shared across sessions); the toy
classifier and the layer lists are cheap and stay in ``st.cache_data``. Compare runs are cached
one (job, batch) unit at a time: a stopped run resumes where it stopped, and any session asking
for the same unit gets it without recomputing. Compare units are *heavy* jobs: at most
SOAE_HEAVY_JOBS of them run at once, the rest wait in the queue.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import streamlit as st
import torch

from soae_app import cache, compute, jobs
from soae_core import compare, landscape, toy2d
from soae_core.anatomy import Anatomy, spatial_layers as find_spatial_layers
from soae_core.app_settings import AttackSettings
from soae_core.models import ModelInfo, get_model_info


def _net(model_name: str) -> torch.nn.Module:
    return cache.model(get_model_info(model_name))


def anatomy(info: ModelInfo, image: np.ndarray, label: int, advs: dict[str, np.ndarray], map_layers: list[str],
            top_channels: int, target: str) -> Anatomy:
    """:func:`soae_core.anatomy.perturbation_anatomy` of the image (C, H, W) and the adversarial
    images (C, H, W) per attack name, computed in the job service and cached per input."""
    return cache.run(compute.anatomy, (cache.spec(info),), (image, label, tuple(advs.items()), tuple(map_layers),
                                                           top_channels, target), "Anatomy")


@st.cache_data(show_spinner=False, max_entries=16)
def _spatial_layers(model_name: str, version: str, input_shape: tuple[int, int, int]) -> list[str]:
    del version
    return find_spatial_layers(_net(model_name), torch.full((1, *input_shape), 0.5))


def spatial_layers(info: ModelInfo) -> list[str]:
    """The model's Conv2d/Linear layers whose outputs are spatial maps, cached per model."""
    return _spatial_layers(info.name, cache.weights_version(info), info.input_shape)


def compare_ticket(info: ModelInfo, job: compare.Job, start: int, stop: int) -> jobs.Ticket:
    """A ticket for ``job`` on the bundled images at positions start..stop of the class-balanced
    order (:func:`soae_core.compare.image_order`): a heavy job, under the service's admission
    control, shared with every session asking for the same unit, cached per unit."""
    specs, args = (cache.spec(info),), (info.dataset, job, start, stop)
    heavy = jobs.Job(key=compute.job_key(compute.compare_unit, specs, args), fn=compute.with_models,
                     args=(compute.compare_unit, specs, args), kind="compare unit", heavy=True)
    return jobs.service().submit(heavy, cache.session())


def compare_batch(info: ModelInfo, job: compare.Job, start: int, stop: int,
                  show: Callable[[str], None] | None = None) -> compare.BatchOutcome:
    """The unit of :func:`compare_ticket`, waited for (its place in the queue goes to ``show``)."""
    return cache.wait_for([compare_ticket(info, job, start, stop)], job.label, show)[0]


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


def loss_landscape(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings, radius: float,
                   line_points: int = 61, plane_points: int = 31
                   ) -> tuple[landscape.LossLine, landscape.LossLine, landscape.LossPlane]:
    """The loss along g, along SOAE's H⁻¹g (with the sidebar's SOAE settings) and on their plane,
    each with its quadratic model; computed in the job service, cached per input."""
    return cache.run(compute.landscape, (cache.spec(info),), (image, label, settings, radius, line_points,
                                                             plane_points), "Loss landscape")
