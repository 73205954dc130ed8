"""The app's computations, cached and queued.

Models are loaded once per process and shared by every browser tab (``st.cache_resource``): they
are in eval mode with frozen parameters, and the library only takes input gradients
(``torch.autograd.grad``/``torch.func``), so concurrent sessions cannot disturb each other. The
sidebar's predictions and cheap look-ups use them in the script thread.

Attacks and the analyses run in the job service (:mod:`soae_app.jobs`): worker processes, one
queue, identical requests from different sessions computed once, results kept (LRU) and keyed on
every argument — a rerun with the same model, image, label and settings costs a dictionary
look-up. Each attack is its own job, so changing a setting only SOAE uses (η, τ, …) does not
rerun the baselines, and vice versa; batchable attacks of several sessions run as one call.

A model is keyed by name, dtype and its weights file's size and modification time, so a
retrained checkpoint is picked up without restarting the app.
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
from streamlit.runtime.scriptrunner import get_script_run_ctx
from torch import nn

from soae_app import compute, jobs
from soae_core import krylov_diagnostics
from soae_core.app_settings import DEFAULT_SETTINGS, AttackSettings
from soae_core.data import SampleSet, load_photo, load_samples
from soae_core.lab import AttackOutcome, IterationView, batchable
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


def spec(info: ModelInfo, dtype_name: str = "float32") -> compute.ModelSpec:
    """How a job names ``info``'s model (see :class:`soae_app.compute.ModelSpec`)."""
    path = str(info.weights_path) if info.weights_path is not None else None
    return compute.ModelSpec(info.name, dtype_name, weights_version(info), path)


def session() -> str | None:
    """The current Streamlit session's id (None outside a script run)."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def wait_for(tickets: list[jobs.Ticket], what: str, show: Callable[[str], None] | None = None) -> list[Any]:
    """The tickets' results, in order. While they wait, says so on the page — the place in the
    queue and an estimate — through ``show(text)`` if given (e.g. a progress bar's text), else in
    a caption that disappears when done. Touching the page every 0.25 s lets Streamlit interrupt
    the wait (Stop, a changed widget); the tickets are then cancelled, which drops queued work
    nobody else waits for. Re-raises a job's exception (ValueError for bad input)."""
    slot = None
    try:
        while not all(ticket.wait(0.25 / len(tickets)) for ticket in tickets):
            queued = [p for p in (t.position() for t in tickets) if p]
            estimate = max(t.estimate_s() for t in tickets)
            text = (f"{what}: waiting in the queue, place {min(queued)} — about {estimate:.0f} s"
                    if queued else f"{what}: running — about {estimate:.0f} s")
            if show is not None:
                show(text)
            else:
                slot = slot or st.empty()
                slot.caption(text)
        return [ticket.result() for ticket in tickets]
    finally:
        for ticket in tickets:
            ticket.cancel()  # a no-op once done
        if slot is not None:
            try:
                slot.empty()
            except Exception:  # noqa: BLE001 - the script is being stopped; nothing to clear
                pass


def run(fn: Callable[..., Any], specs: tuple[compute.ModelSpec, ...], args: tuple, what: str,
        heavy: bool = False) -> Any:
    """``fn(*models, *args)`` in the job service (worker processes; shared and cached across
    sessions by its arguments), waiting as :func:`wait_for` does."""
    job = jobs.Job(key=compute.job_key(fn, specs, args), fn=compute.with_models, args=(fn, specs, args),
                   kind=f"{fn.__module__}.{fn.__qualname__}", heavy=heavy)
    return wait_for([jobs.service().submit(job, session())], what)[0]


def attack_job(info: ModelInfo, image: np.ndarray, label: int, name: str, settings: AttackSettings) -> jobs.Job:
    """The job of attack ``name`` on the image (C, H, W): keyed on the attack's own keyword
    arguments only, and batched with other sessions' images when the attack allows it."""
    kwargs = settings.attack_kwargs(name, info.dataset)
    request = compute.AttackRequest(spec(info), np.ascontiguousarray(image, dtype=np.float32), int(label), name,
                                    kwargs)
    key = compute.job_key(compute.attack, (request.spec,), (request.image, request.label, name, kwargs))
    batch = None
    if jobs.batching_enabled() and batchable(name, kwargs, torch.float32):
        batch = jobs.Batch(key=(request.spec, name, repr(sorted(kwargs.items())), request.image.shape),
                           fn=compute.attack_batch, member=request)
    return jobs.Job(key=key, fn=compute.attack, args=(request,), kind=f"attack:{name}", batch=batch)


def attacks(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings
            ) -> list[tuple[AttackOutcome, list[IterationView]]]:
    """Every attack of the settings (SOAE first) on the image, submitted at once so that they
    run side by side on the workers: one (outcome, SOAE views) per attack."""
    current = session()
    tickets = [jobs.service().submit(attack_job(info, image, label, name, settings), current)
               for name in settings.attack_names]
    return wait_for(tickets, ", ".join(settings.attack_names))


def attack(info: ModelInfo, image: np.ndarray, label: int, name: str,
           settings: AttackSettings) -> tuple[AttackOutcome, list[IterationView]]:
    """``soae_core.lab.run_attack`` of attack ``name`` on the image (C, H, W), cached on the
    attack's own keyword arguments only."""
    return wait_for([jobs.service().submit(attack_job(info, image, label, name, settings), session())], name)[0]


def _image(image: np.ndarray, dtype_name: str = "float32") -> torch.Tensor:
    return compute.tensor(image, dtype_name)


def krylov_history(info: ModelInfo, image: np.ndarray, label: int,
                   settings: AttackSettings) -> list[krylov_diagnostics.KrylovRecord]:
    """GMRES records of every SOAE outer iteration (with true residuals), cached on SOAE's settings."""
    soae_only = dataclasses.replace(settings, baselines=())
    return run(krylov_diagnostics.krylov_history, (spec(info),), (_image(image), label, soae_only), "SOAE")


def hessian_spectrum(info: ModelInfo, image: np.ndarray, label: int, max_dim: int) -> krylov_diagnostics.Spectrum:
    """Ritz values of the exact input Hessian (float64 copy of the model), cached per input."""
    return run(krylov_diagnostics.hessian_spectrum, (spec(info, "float64"),),
               (_image(image, "float64"), label, max_dim), "Arnoldi")


def fd_accuracy(info: ModelInfo, image: np.ndarray, label: int) -> pd.DataFrame:
    """Finite-difference vs exact Hessian-vector product error over η (every η at once), cached per input."""
    return run(krylov_diagnostics.fd_accuracy_sweep, (spec(info), spec(info, "float64")), (_image(image), label),
               "Products over η")


def tau_table(info: ModelInfo, image: np.ndarray, label: int, eta: float, max_dim: int) -> pd.DataFrame:
    """m(τ) for the finite-difference (step η) and exact products at the image, cached per input."""
    settings = dataclasses.replace(DEFAULT_SETTINGS, eta=eta)
    return run(compute.tau_table, (spec(info),), (_image(image), label, settings, max_dim), "GMRES at the smallest τ")
