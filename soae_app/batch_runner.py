"""Running comparison jobs on many images in the app: a progress bar, a Stop button, resuming.

A run is a list of tasks — (model, :class:`soae_core.analysis.jobs.Job`) pairs with distinct job
labels — on the first n bundled images, cut into (task, batch) units. Each unit comes from
:func:`soae_app.cache.compare_batch` (cached across sessions) and is kept in this session as soon
as it is done, so a Stop — which makes Streamlit rerun the page — keeps everything finished so
far, and Resume continues from there.

State per run area (``area``, e.g. "compare" or "sweep::tau") in ``st.session_state``:
``<area>::units`` (finished units of the current run), ``<area>::started`` and
``<area>::stopped`` (the run id a Run/Resume or Stop button was pressed for).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st

from soae_app import cache
from soae_core.analysis.jobs import BatchOutcome, Job, JobResult, batches, combine
from soae_core.models import ModelInfo


Task = tuple[ModelInfo, Job]


def run_id(tasks: list[Task], n: int, batch_size: int) -> str:
    """A short id naming a run: models and weights versions, jobs, n and batch size."""
    text = repr(([(info.name, cache.weights_version(info), job) for info, job in tasks], n, batch_size))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class RunProgress:
    """What a run has produced so far: finished batches per job label, in image order."""

    jobs: list[Job]
    outcomes: dict[str, list[BatchOutcome]]
    done_units: int
    total_units: int
    stopped: bool

    @property
    def complete(self) -> bool:
        """True when every unit is done."""
        return self.done_units == self.total_units

    def results(self) -> dict[str, JobResult]:
        """Joined results of every job with at least one finished batch (partial runs included)."""
        return {job.label: combine(self.outcomes[job.label]) for job in self.jobs if self.outcomes[job.label]}


def _press(key: str, value: str) -> None:
    st.session_state[key] = value


def _resume(area: str, run: str) -> None:
    st.session_state[f"{area}::stopped"] = None
    st.session_state[f"{area}::started"] = run


def run_jobs(tasks: list[Task], n: int, area: str, batch_size: int = 25, autostart: bool = False,
             run_label: str = "Run") -> RunProgress:
    """Show the run's controls and progress, compute what is missing unless stopped, and return
    what is done. With ``autostart`` the run starts without pressing Run (cheap defaults).
    Raises ValueError when two tasks share a job label."""
    jobs = [job for _, job in tasks]
    if len({job.label for job in jobs}) != len(jobs):
        raise ValueError(f"tasks must have distinct job labels, got {[job.label for job in jobs]}")
    run = run_id(tasks, n, batch_size)
    store = st.session_state.setdefault(f"{area}::units", {})
    if store.get("run") != run:  # another configuration: start a fresh record
        store.clear()
        store.update(run=run, units={})
    done: dict[tuple[str, int], BatchOutcome] = store["units"]
    # Batch by batch, every job on each batch: a stopped run has all attacks on (nearly) the same images.
    units = [(info, job, start, stop) for start, stop in batches(n, batch_size) for info, job in tasks]
    todo = [unit for unit in units if (unit[1].label, unit[2]) not in done]
    stopped = st.session_state.get(f"{area}::stopped") == run
    started = autostart or st.session_state.get(f"{area}::started") == run

    if todo and stopped:
        left, right = st.columns([3, 1])
        left.warning(f"Stopped after {len(units) - len(todo)} of {len(units)} batches; the tables show what is done.")
        right.button("Resume", key=f"{area}::resume", on_click=_resume, args=(area, run), type="primary")
    elif todo and not started:
        st.button(run_label, key=f"{area}::run", on_click=_press, args=(f"{area}::started", run), type="primary")
    elif todo:
        bar = st.progress(0.0)
        stop_slot = st.empty()
        stop_slot.button("Stop", key=f"{area}::stop", on_click=_press, args=(f"{area}::stopped", run),
                         help="Stops after the batch in progress; finished batches are kept.")
        for k, (info, job, start, stop) in enumerate(todo):
            finished = len(units) - len(todo) + k
            bar.progress(finished / len(units),
                         text=f"{job.label}: images {start + 1}–{stop} of {n} (batch {finished + 1} of {len(units)})")
            done[(job.label, start)] = cache.compare_batch(info, info.dataset, job, start, stop)
        bar.empty()
        stop_slot.empty()

    outcomes = {job.label: [done[(job.label, start)] for start, _ in batches(n, batch_size)
                            if (job.label, start) in done] for job in jobs}
    return RunProgress(jobs, outcomes, sum(len(v) for v in outcomes.values()), len(units), stopped and bool(todo))
