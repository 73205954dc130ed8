"""Every page's computations, cached and queued.

Models are loaded once per process and shared by every browser tab (``st.cache_resource``): they
are in eval mode with frozen parameters, and the library only takes input gradients
(``torch.autograd.grad``/``torch.func``), so concurrent sessions cannot disturb each other. The
sidebar's predictions use them in the script thread.

Everything heavier runs in the worker pool (:mod:`soae_app.worker_pool`): worker processes behind
one queue, so 30 students' computations do not fight over the server's GIL. Results are kept
(LRU) keyed on the function and every argument, the model by name and weights version: a rerun
with the same model, image, label and settings costs a dictionary look-up, and identical
requests from different sessions are computed once. Each attack is its own job, so changing a
setting only SOAE uses (η, τ, …) does not rerun the baselines, and vice versa; the attacks of one
Attack Lab run are submitted together and run side by side, and batchable attacks of several
sessions run as one batched call. Compare units are *heavy* jobs under admission control: a
stopped run resumes where it stopped, and any session asking for the same unit gets it without
recomputing.

A model is keyed by name, dtype, device and its weights file's size and modification time, so a
retrained checkpoint is picked up without restarting the app. Every computation on a model has
one shape (:mod:`soae_app.compute`): ``compute(model, *args)``, called here as
``cache.compute(info, *args)`` through :func:`per_model`. Images arrive as NumPy (C, H, W) in [0, 1];
results leave the device in :func:`soae_app.compute.with_models`. The device is the process's:
``$SOAE_DEVICE`` (default ``auto``, see :mod:`soae_core.device`), shown in the sidebar.

An uploaded model (``uploads``, your own weights) lives in this process's memory only, keyed by
a name that holds the SHA-256 of its bytes; the worker processes cannot load it, so its
computations run in the script thread (cached with ``st.cache_data`` like the rest).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from streamlit.runtime.scriptrunner import get_script_run_ctx
from torch import nn

from soae_app import compute, uploads, worker_pool
from soae_core.analysis import attack_lab, how_soae_works, jobs, krylov_inspector
from soae_core.analysis.settings import AttackSettings
from soae_core.data import load_photo
from soae_core.device import describe_device, device_from_env, to_cpu
from soae_core.models import ModelInfo, list_models, load_model


def weights_version(info: ModelInfo) -> str:
    """Identifies the weights file's current content cheaply: 'size:mtime' ('' if none)."""
    if info.weights_path is None or not Path(info.weights_path).is_file():
        return ""
    stat = Path(info.weights_path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


@st.cache_resource(show_spinner=False)
def _device_name() -> str:
    return str(device_from_env())


def device() -> torch.device:
    """The device every model and computation of this app process uses: ``$SOAE_DEVICE``
    resolved once per process (ValueError naming the variable and what exists if it is bad)."""
    return torch.device(_device_name())


def device_label() -> str:
    """The device for people, e.g. "CPU" or "CUDA 0 — NVIDIA H200" (shown in the sidebar)."""
    return describe_device(device())


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _model(name: str, dtype_name: str, version: str, device_name: str) -> nn.Module:
    del version  # part of the cache key only
    if uploads.is_upload(name):  # your own weights: the name holds the file's SHA-256
        return uploads.load(name, compute.DTYPES[dtype_name]).to(device_name)
    return load_model(name, dtype=compute.DTYPES[dtype_name], device=device_name)


def model(info: ModelInfo, dtype_name: str = "float32") -> nn.Module:
    """The shared, frozen, eval-mode model of ``info`` in float32 or float64 on :func:`device`
    (ValueError if unavailable)."""
    return _model(info.name, dtype_name, weights_version(info), _device_name())


@st.cache_resource(show_spinner=False, ttl=5)
def _zoo(models_dir: str | None, hub_dir: str) -> list[ModelInfo]:
    del models_dir, hub_dir  # the cache key: where weights are looked for
    return list_models()


def zoo() -> list[ModelInfo]:
    """The registry's models (:func:`soae_core.models.list_models`: each reads its weights file's
    state and model card), re-read at most every 5 s and whenever the places weights are looked
    for change ($SOAE_MODELS_DIR, torch's hub directory): a newly trained checkpoint appears
    within 5 s, and a page rerun does not touch the disk once per model. Shared; ModelInfo is frozen."""
    return _zoo(os.environ.get("SOAE_MODELS_DIR"), torch.hub.get_dir())


# The bundled sample set of a dataset (shared, read-only): the one copy per process that
# :mod:`soae_app.compute` also uses for work run in this thread.
samples = compute.samples


@st.cache_data(show_spinner=False, max_entries=32)
def photo(name: str, input_shape: tuple[int, int, int]) -> np.ndarray:
    """A scikit-image photograph at the model's input shape, (C, H, W) float32 in [0, 1]."""
    return load_photo(name, input_shape)[0].numpy()


# ---------------------------------------------------------------------------------- the worker pool
def spec(info: ModelInfo, dtype_name: str = "float32") -> compute.ModelSpec:
    """How a job names ``info``'s model (see :class:`soae_app.compute.ModelSpec`)."""
    path = str(info.weights_path) if info.weights_path is not None else None
    return compute.ModelSpec(info.name, dtype_name, weights_version(info), path, _device_name())


@st.cache_data(show_spinner=False, max_entries=256)
def _in_thread(fn_name: str, model_name: str, dtypes: tuple[str, ...], version: str, device_name: str,
               args: tuple) -> Any:
    nets = [_model(model_name, dtype, version, device_name) for dtype in dtypes]
    return to_cpu(getattr(compute, fn_name)(*nets, *args))


def in_thread(fn: Callable[..., Any], info: ModelInfo, dtypes: tuple[str, ...], args: tuple) -> Any:
    """``fn(*models, *args)`` of :mod:`soae_app.compute` in this script thread, cached: for uploaded
    models, which only this process holds."""
    return _in_thread(fn.__name__, info.name, dtypes, weights_version(info), _device_name(), args)


def session() -> str | None:
    """The current Streamlit session's id (None outside a script run)."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def job(fn: Callable[..., Any], specs: tuple[compute.ModelSpec, ...], args: tuple, heavy: bool = False,
        batch: worker_pool.Batch | None = None) -> worker_pool.Job:
    """The pool's job for ``fn(*models of specs, *args)`` (a function of :mod:`soae_app.compute`)."""
    return worker_pool.Job(key=compute.job_key(fn, specs, args), fn=compute.with_models, args=(fn, specs, args),
                           kind=fn.__qualname__, heavy=heavy, batch=batch)


def wait_for(tickets: list[worker_pool.Ticket], what: str, show: Callable[[str], None] | None = None) -> list[Any]:
    """The tickets' results, in order. While they wait, says so on the page — the place in the
    queue and an estimate — through ``show(text)`` if given (e.g. a progress bar's text), else in
    a caption that disappears when done. The text is redrawn when it changes and at least once a
    second: touching the page lets Streamlit interrupt the wait (Stop, a changed widget), and the
    tickets are then cancelled, which drops queued work nobody else waits for. (Redrawing every
    0.25 s whatever the text sent 30 waiting students 120 messages a second.) Re-raises a job's
    exception (ValueError for bad input)."""
    slot, drawn, drawn_at = None, None, 0.0
    try:
        while pending := [ticket for ticket in tickets if not ticket.done()]:
            if pending[0].wait(0.25):
                continue  # one finished: look again at once
            queued = [p for p in (t.position() for t in pending) if p]
            estimate = max(t.estimate_s() for t in pending)
            text = (f"{what}: waiting in the queue, place {min(queued)} — about {estimate:.0f} s"
                    if queued else f"{what}: running — about {estimate:.0f} s")
            if text == drawn and time.monotonic() - drawn_at < 1.0:
                continue
            drawn, drawn_at = text, time.monotonic()
            if show is not None:
                show(text)
            else:
                slot = slot or st.empty()
                slot.caption(text)
        return [ticket.result() for ticket in tickets]
    except worker_pool.WorkerLost as error:  # not the student's fault: say so, never a traceback
        st.error(f"{what}: {error}.")
        st.stop()
    finally:
        for ticket in tickets:
            ticket.cancel()  # a no-op once done
        if slot is not None:
            try:
                slot.empty()
            except Exception:  # noqa: BLE001 - the script is being stopped; nothing to clear
                pass


def per_model(fn: Callable[..., Any], dtypes: tuple[str, ...] = ("float32",), what: str = "",
              heavy: bool = False) -> Callable[..., Any]:
    """``fn(*models, *args)`` of :mod:`soae_app.compute` as ``f(info, *args)``: run in the worker
    pool on the copies ``dtypes`` of ``info``'s model, cached and shared by its arguments."""
    def on_model(info: ModelInfo, *args: Any) -> Any:
        if uploads.is_upload(info.name):
            return in_thread(fn, info, dtypes, args)
        ticket = worker_pool.service().submit(job(fn, tuple(spec(info, d) for d in dtypes), args, heavy), session())
        return wait_for([ticket], what or fn.__name__.replace("_", " "))[0]

    on_model.__name__, on_model.__qualname__, on_model.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return on_model


# ---------------------------------------------------------------------------------- Attack Lab
def attack_job(info: ModelInfo, image: np.ndarray, label: int, name: str, kwargs: dict[str, Any],
               target: int | None, precision: str) -> worker_pool.Job:
    """The job of attack ``name`` with ``kwargs`` on the image (C, H, W) (aimed at ``target`` when
    targeted) on the ``precision`` ("float32" or "float64") copy of the model: keyed on the
    attack's own arguments only, and batched with other sessions' images when the attack allows it
    (:func:`soae_core.analysis.attack_lab.batchable`; SOAE_BATCHING=0 switches batching off)."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    request = compute.AttackRequest(spec(info, precision), image, int(label), name, kwargs)
    grouped = None
    if (target is None and worker_pool.batching_enabled()
            and attack_lab.batchable(name, kwargs, compute.DTYPES[precision])):
        grouped = worker_pool.Batch(key=(request.spec, name, repr(sorted(kwargs.items())), image.shape),
                                    fn=compute.attack_batch, member=request)
    return job(compute.attack, (request.spec,), (image, request.label, name, kwargs, target), batch=grouped)


def _attack_tickets(info: ModelInfo, image: np.ndarray, label: int, requests: dict[str, tuple[dict[str, Any], int | None]],
                    precision: str, current: str | None) -> dict[str, Any]:
    """One ticket per attack name (or, for an uploaded model, the result computed in this thread)."""
    if uploads.is_upload(info.name):
        return {name: in_thread(compute.attack, info, (precision,), (np.ascontiguousarray(image, dtype=np.float32),
                                                                     int(label), name, kwargs, target))
                for name, (kwargs, target) in requests.items()}
    return {name: worker_pool.service().submit(attack_job(info, image, label, name, kwargs, target, precision), current)
            for name, (kwargs, target) in requests.items()}


def lab_run(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings,
            progress: Callable[[str], None] | None = None) -> attack_lab.LabRun:
    """:func:`soae_core.analysis.attack_lab.run_lab` on the image. Every attack is submitted to
    the pool first (aimed at :func:`~soae_core.analysis.attack_lab.lab_target` when the settings
    are targeted), so they run side by side; ``run_lab`` then collects them in order.

    progress: shows one line of text (e.g. a placeholder's caption), called only when some attack
    is not cached yet: which attack is being collected and, while one waits, its place in the
    queue (see :func:`wait_for`). A rerun with everything cached draws nothing. (Not ``st.status``:
    Streamlit sleeps 50 ms on opening and on closing a status box, 0.1 s added to every cold view.)"""
    goal = target(info, image, label, settings)  # run_lab checks the image and label and picks it again
    tickets = _attack_tickets(info, image, label, {name: (settings.attack_kwargs(name, info.dataset), goal)
                                                   for name in settings.attack_names}, settings.precision, session())
    net = model(info, settings.precision)
    x = compute.batch(image, net)

    def collect(on_attack: Callable[[str], None] | None, show: Callable[[str], None] | None) -> attack_lab.LabRun:
        def run(name: str, kwargs: dict[str, Any],
                target: int | None) -> tuple[attack_lab.AttackOutcome, list[attack_lab.IterationView]]:
            ticket = tickets[name]
            return ticket if not isinstance(ticket, worker_pool.Ticket) else wait_for([ticket], name, show)[0]

        return to_cpu(attack_lab.run_lab(net, x, label, settings, info.dataset, info.class_names,
                                         run=run, on_attack=on_attack))

    try:
        if progress is None or all(t.done() for t in tickets.values() if isinstance(t, worker_pool.Ticket)):
            return collect(None, None)

        def line(detail: str) -> None:
            progress(f"Running {', '.join(settings.attack_names)} on {info.name} — {detail}")

        return collect(lambda name: line(f"{name}…"), line)
    finally:
        for ticket in tickets.values():
            if isinstance(ticket, worker_pool.Ticket):
                ticket.cancel()  # interrupted: drop what nobody else waits for


@st.cache_data(show_spinner=False, max_entries=256)
def _transfer_table(models: tuple[tuple[str, str], ...], device_name: str, clean: np.ndarray, adv: np.ndarray,
                    label: int, target: int | None, class_names: tuple[str, ...], source: str,
                    _infos: list[ModelInfo], _run: attack_lab.LabRun, _outcome: attack_lab.AttackOutcome) -> pd.DataFrame:
    if any(uploads.is_upload(name) for name, _ in models):  # only this process holds an upload
        nets = {name: _model(name, "float32", version, device_name) for name, version in models}
        return attack_lab.transfer_table(nets, _run, _outcome, source)
    # In the pool, like every other model computation: a script thread holds the GIL that all
    # sessions share (this table was a fifth of the server's busy time in a 30-student burst).
    ticket = worker_pool.service().submit(_transfer_job(_infos, _run, _outcome, source), session())
    return wait_for([ticket], "Transfer", show=lambda _text: None)[0]  # draws nothing inside a cached function


def _transfer_job(infos: list[ModelInfo], run: attack_lab.LabRun, outcome: attack_lab.AttackOutcome,
                  source: str) -> worker_pool.Job:
    request = (tuple(info.name for info in infos), dataclasses.replace(run, outcomes=[], iterations=[]), outcome, source)
    specs = tuple(spec(info) for info in infos)
    grouped = None
    if worker_pool.batching_enabled():  # a class's tables on the same models: a few calls, not one each
        grouped = worker_pool.Batch(key=("transfer", specs), fn=compute.transfer_batch,
                                    member=compute.TransferRequest(specs, request))
    return job(compute.transfer_table, specs, (request,), batch=grouped)


def start_transfer_table(infos: list[ModelInfo], run: attack_lab.LabRun, outcome: attack_lab.AttackOutcome,
                         source: str) -> None:
    """Start :func:`transfer_table`'s pool job now and return at once: called as soon as the
    attacks are in, its forward passes run in a worker while this script draws the figures above
    the table, and :func:`transfer_table` then joins the job or finds it done (the pool shares
    equal jobs and keeps results). In a 30-student burst the tables used to queue one after
    another behind the last figures. Nothing is started for an uploaded model (its table is
    computed in this thread); a table the pool computed before comes from the pool's results at
    the cost of the job's key (a hash of the request)."""
    if not any(uploads.is_upload(info.name) for info in infos):
        worker_pool.service().submit(_transfer_job(infos, run, outcome, source), session())


def transfer_table(infos: list[ModelInfo], run: attack_lab.LabRun, outcome: attack_lab.AttackOutcome,
                   source: str) -> pd.DataFrame:
    """:func:`soae_core.analysis.attack_lab.transfer_table` of ``outcome`` on the models of ``infos``
    (a few forward passes, in the worker pool), cached on the models' names and weights versions,
    the clean and adversarial images, the label and the target."""
    return _transfer_table(tuple((i.name, weights_version(i)) for i in infos), _device_name(), run.image,
                           outcome.adv, run.label, outcome.target, tuple(run.class_names), source,
                           _infos=infos, _run=run, _outcome=outcome)


# ---------------------------------------------------------------------------------- Source × target grid
grid_row = per_model(compute.grid_row, what="Grid row")


def target(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings) -> int | None:
    """The class the sidebar's settings aim at for the image (None: untargeted), as the Attack Lab
    picks it (:func:`soae_core.analysis.attack_lab.lab_target`). ValueError for a chosen target
    equal to the true class."""
    if not settings.targeted:
        return None  # nothing to pick (and no model copy in the settings' precision to load for it)
    net = model(info, settings.precision)
    return attack_lab.lab_target(net, compute.batch(image, net), label, settings, info.class_names)


# ---------------------------------------------------------------------------------- Krylov Inspector
# Each takes the target class last (None: untargeted; see :func:`target`).
_krylov_history = per_model(compute.krylov_history, what="SOAE with true residuals")


def krylov_history(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings,
                   goal: int | None = None) -> list[krylov_inspector.KrylovRecord]:
    """GMRES records of every SOAE outer iteration (with true residuals), cached on SOAE's settings."""
    return _krylov_history(info, image, label, dataclasses.replace(settings, baselines=()), goal)


hessian_spectrum = per_model(compute.hessian_spectrum, dtypes=("float64",), what="Arnoldi")
fd_accuracy = per_model(compute.fd_accuracy, dtypes=("float32", "float64"), what="Products over η")
tau_table = per_model(compute.tau_table, what="GMRES at the smallest τ")


_margin_gains = per_model(compute.margin_gains, what="Margins along g and δ̃")


def margin_gains(info: ModelInfo, image: np.ndarray, label: int, settings: AttackSettings,
                 goal: int | None = None) -> pd.DataFrame:
    """Per wrong class, the gain of SOAE's first step along g and along δ̃
    (:func:`soae_core.analysis.krylov_inspector.class_margin_gains`), cached on SOAE's settings."""
    soae_only = dataclasses.replace(settings, baselines=())
    return _margin_gains(info, image, label, soae_only, tuple(info.class_names), goal)


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


loss_landscape = per_model(compute.loss_landscape, what="Loss landscape")

# ---------------------------------------------------------------------------------- Perturbation Anatomy
anatomy = per_model(compute.anatomy, what="Anatomy")
spatial_layers = per_model(compute.spatial_layers, what="Layers")


# ---------------------------------------------------------------------------------- Compare & Sweeps, Models
def compare_ticket(info: ModelInfo, dataset: str, unit: jobs.Job, start: int, stop: int) -> worker_pool.Ticket:
    """A ticket for ``unit`` on the bundled images of ``dataset`` at positions start..stop of the
    class-balanced order (:func:`soae_core.analysis.jobs.image_order`): a heavy job under the
    pool's admission control, shared with every session asking for the same unit."""
    return worker_pool.service().submit(job(compute.compare_batch, (spec(info),), (dataset, unit, start, stop),
                                            heavy=True), session())


transfer_examples = per_model(compute.transfer_examples, what="Transfer examples", heavy=True)


compare_images = compute.compare_images


def compare_batch(info: ModelInfo, dataset: str, unit: jobs.Job, start: int, stop: int,
                  show: Callable[[str], None] | None = None) -> jobs.BatchOutcome:
    """The unit of :func:`compare_ticket`, waited for (its place in the queue goes to ``show``)."""
    if uploads.is_upload(info.name):
        return in_thread(compute.compare_batch, info, ("float32",), (dataset, unit, start, stop))
    return wait_for([compare_ticket(info, dataset, unit, start, stop)], unit.label, show)[0]
