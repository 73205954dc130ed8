"""Heavy work out of the script threads: a bounded pool of worker processes behind one queue.

Every browser session is a thread of the one Streamlit process, so 30 students computing at once
are 30 threads fighting for one GIL (measured: 30 simultaneous cold Attack Lab loads ran at 0.3–0.4
of the speed of the same loads one after another). Here computations run in ``workers`` processes
(default: one per core) and script threads only wait. The rules:

- **Bounded**: at most ``workers`` computations at once; the rest wait in one queue, interactive
  jobs (an Attack Lab attack) before heavy ones (a Compare unit). Interactive jobs go shortest
  expected first (the running mean of their kind), aged by their wait, so a quick Attack Lab
  request does not queue behind a slow Krylov analysis; heavy jobs first come first served.
- **Admission control**: at most ``heavy_slots`` heavy jobs run at once; each session has at most
  one heavy job queued or running (its next one replaces it in the queue).
- **Shared**: a job whose key equals one queued or running joins it; all its waiters get the
  result. Finished results are kept (LRU, ``cache_entries``): a hit returns at once, never queues.
- **Batched** (issue 17): queued jobs with the same batch key run as one call of their batch
  function, which returns one result — or one exception — per member, so a bad member fails alone.
  An idle server dispatches at once; a busy one lets a batchable job wait up to
  ``batch_window_s`` for companions (and any that queued behind busy workers join it anyway).
- **Cancellable**: :meth:`Ticket.cancel` stops waiting; a queued job nobody waits for any more is
  dropped. A running job finishes (its result is cached for whoever asks next).

``workers=0`` runs every job in the caller's thread (no processes): the old behaviour, and what
the library's own tests use. Results are pickled once and unpickled for every waiter, so no two
sessions share a mutable object.
"""

from __future__ import annotations

import collections
import importlib
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any


class Cancelled(Exception):
    """The ticket was cancelled before its result arrived."""


class WorkerLost(RuntimeError):
    """The worker process computing the job stopped (killed, out of memory); try again."""


@dataclass(frozen=True)
class Batch:
    """How a job joins others: jobs with equal ``key`` run as one ``fn(members)`` call, where
    ``members`` is the list of their ``member`` values; ``fn`` returns one result or exception
    per member, in order. ``limit``: most members in one call."""

    key: Hashable
    fn: Callable[[list[Any]], list[Any]]
    member: Any
    limit: int = 64


@dataclass(frozen=True)
class Job:
    """A computation: ``fn(*args)`` (picklable, module-level ``fn``) identified by ``key``.

    kind: names the job for time estimates (e.g. "attack:SOAE"). heavy: a long batch job
    (Compare & Sweeps, Models table) under admission control. batch: set when the job may
    run batched with others."""

    key: Hashable
    fn: Callable[..., Any]
    args: tuple = ()
    kind: str = "job"
    heavy: bool = False
    batch: Batch | None = None


@dataclass(eq=False)
class _Entry:
    job: Job
    queued_at: float
    waiters: collections.Counter = field(default_factory=collections.Counter)  # tickets per session
    done: threading.Event = field(default_factory=threading.Event)
    running: bool = False
    payload: bytes | None = None
    error: BaseException | None = None


class Ticket:
    """A session's claim on a job's result."""

    def __init__(self, service: JobService, entry: _Entry | None, payload: bytes | None = None,
                 session: Hashable = None) -> None:
        self._service, self._entry, self._payload, self._session = service, entry, payload, session
        self._cancelled = False

    @property
    def cached(self) -> bool:
        """True when the result was there already (no queue, no wait)."""
        return self._entry is None

    def done(self) -> bool:
        """True when the result (or its exception) is there."""
        return self._entry is None or self._entry.done.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait up to ``timeout_s`` seconds; True when done."""
        return self.done() or self._entry.done.wait(timeout_s)

    def position(self) -> int | None:
        """0 while running, k ≥ 1 for the k-th place in the queue, None when done or cancelled."""
        return None if self.done() or self._cancelled else self._service._position(self._entry)

    def estimate_s(self) -> float:
        """Rough seconds until the result: the work ahead in the queue ÷ workers, plus this job."""
        return 0.0 if self.done() else self._service._estimate(self._entry)

    def result(self, timeout_s: float | None = None) -> Any:
        """The job's result (a fresh copy); re-raises the job's exception; Cancelled after
        :meth:`cancel`; TimeoutError when not done within ``timeout_s``."""
        if self._cancelled:
            raise Cancelled("the job was cancelled")
        if not self.wait(timeout_s):
            raise TimeoutError(f"the job did not finish within {timeout_s} s")
        if self._entry is None:
            return pickle.loads(self._payload)
        if self._entry.error is not None:
            raise self._entry.error
        return pickle.loads(self._entry.payload)

    def cancel(self) -> None:
        """Stop waiting; drops the job from the queue if nobody else waits for it."""
        if not self._cancelled and not self.done():
            self._cancelled = True
            self._service._leave(self._entry, self._session)


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*args)


def _exit_with_parent(parent: int, period_s: float = 1.0) -> None:
    """Ends this worker process once its parent is gone (then it is re-parented, so getppid()
    changes). Without it a server killed with SIGKILL — or a test process ending without running
    the pool's shutdown — left its workers behind, ~800 MB each, waiting for jobs forever."""
    while os.getppid() == parent:
        time.sleep(period_s)
    os._exit(0)


def _init_worker(preload: tuple[str, ...]) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="soae-exit-with-parent", daemon=True).start()
    # One intra-op thread per worker (parallelism comes from the workers), set before anything
    # imports torch: torch reads OMP_NUM_THREADS when it starts.
    os.environ["OMP_NUM_THREADS"] = os.environ.get("SOAE_TORCH_THREADS", "1")
    for name in preload:  # imported once per worker, before its first job; its prepare_worker() run
        prepare = getattr(importlib.import_module(name), "prepare_worker", None)
        if prepare is not None:
            prepare()


class JobService:
    """The queue and its worker processes (see the module docstring). Thread-safe."""

    def __init__(self, workers: int, heavy_slots: int | None = None, batch_window_s: float = 0.03,
                 cache_entries: int = 2048, preload: tuple[str, ...] = ()) -> None:
        if workers < 0:
            raise ValueError(f"workers must be ≥ 0, got {workers}")
        self.workers = workers
        self.heavy_slots = max(1, heavy_slots if heavy_slots is not None else max(workers, 1))
        self.batch_window_s = batch_window_s
        self._lock = threading.Condition()
        self._queue: list[_Entry] = []
        self._by_key: dict[Hashable, _Entry] = {}
        self._running: list[_Entry] = []
        self._calls = 0  # calls in the worker processes now: a batch of any size is one
        self._heavy_by_session: dict[Hashable, _Entry] = {}
        self._cache: collections.OrderedDict[Hashable, bytes] = collections.OrderedDict()
        self._cache_entries = cache_entries
        self._seconds: dict[str, float] = {}
        self.stats = collections.Counter()
        self._pool = None
        self._preload = preload
        if workers:
            self._pool = self._new_pool()
            self._dispatcher = threading.Thread(target=self._dispatch_loop, name="soae-jobs", daemon=True)
            self._dispatcher.start()

    # ---- the caller's side -------------------------------------------------------------
    def submit(self, job: Job, session: Hashable = None) -> Ticket:
        """Queue ``job`` for ``session`` (a cache hit returns a done ticket at once)."""
        with self._lock:
            payload = self._cache.get(job.key)
            if payload is not None:
                self._cache.move_to_end(job.key)
                self.stats["cache hits"] += 1
                return Ticket(self, None, payload)
            entry = self._by_key.get(job.key)
            if entry is None:
                entry = _Entry(job, time.monotonic())
                self._by_key[job.key] = entry
                self._queue.append(entry)
                self.stats["jobs"] += 1
            else:
                self.stats["shared"] += 1
            entry.waiters[session] += 1
            if job.heavy and session is not None:
                previous = self._heavy_by_session.get(session)
                if previous is not None and previous is not entry and not previous.running:
                    previous.waiters.pop(session, None)  # one heavy job per session: the new one replaces it
                    self._drop_if_orphan(previous)
                self._heavy_by_session[session] = entry
            self._lock.notify_all()
        ticket = Ticket(self, entry, session=session)
        if self._pool is None:
            self._run_inline(entry)
        return ticket

    def run(self, job: Job, session: Hashable = None) -> Any:
        """Submit and wait: the job's result."""
        return self.submit(job, session).result()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self._preload,))

    def start_workers(self) -> None:
        """Start every worker process now (each imports its preload modules and runs their
        ``prepare_worker()``, if they have one) instead of at the first jobs, so that the first
        students do not wait for the imports."""
        if self._pool is not None:
            for _ in range(self.workers):
                self._pool.submit(time.sleep, 0.5)

    def shutdown(self) -> None:
        """Stop the worker processes (queued jobs are left undone)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- bookkeeping -------------------------------------------------------------------
    def _ordered(self, now: float) -> list[_Entry]:
        """The queue in dispatch order: interactive jobs first, the shortest expected first with
        ageing (expected seconds of its kind minus seconds waited, so a long job is not passed
        forever), then heavy jobs first come first served."""
        interactive = sorted((e for e in self._queue if not e.job.heavy),
                             key=lambda e: self._seconds.get(e.job.kind, 1.0) - (now - e.queued_at))
        return interactive + [e for e in self._queue if e.job.heavy]

    def _position(self, entry: _Entry) -> int | None:
        with self._lock:
            if entry.running:
                return 0
            order = self._ordered(time.monotonic())
            return order.index(entry) + 1 if entry in order else None

    def _estimate(self, entry: _Entry) -> float:
        with self._lock:
            order = self._ordered(time.monotonic())
            ahead = order[:order.index(entry)] if entry in order else []
            own = self._seconds.get(entry.job.kind, 1.0)
            work = sum(self._seconds.get(e.job.kind, 1.0) for e in ahead + self._running)
            return own + work / max(self.workers, 1)

    def _leave(self, entry: _Entry, session: Hashable) -> None:
        with self._lock:
            if entry.waiters[session] > 0:
                entry.waiters[session] -= 1
            self._drop_if_orphan(entry)

    def _drop_if_orphan(self, entry: _Entry) -> None:
        if sum(entry.waiters.values()) <= 0 and not entry.running and entry in self._queue:
            self._queue.remove(entry)
            self._by_key.pop(entry.job.key, None)
            entry.error = Cancelled("nobody waits for this job any more")
            entry.done.set()
            self.stats["cancelled"] += 1

    def _finish(self, entries: list[_Entry], outcomes: list[Any], seconds: float, call: bool = True) -> None:
        """Hand the outcomes to the entries' waiters; ``call``: they ran as one call in a worker process."""
        with self._lock:
            for entry, outcome in zip(entries, outcomes, strict=False):
                if isinstance(outcome, BaseException):
                    entry.error = outcome
                else:
                    try:
                        entry.payload = pickle.dumps(outcome)
                        self._cache[entry.job.key] = entry.payload
                        self._cache.move_to_end(entry.job.key)
                    except Exception as error:  # noqa: BLE001 - unpicklable results reach the waiter as errors
                        entry.error = error
                entry.running = False
                self._by_key.pop(entry.job.key, None)
                if entry in self._running:
                    self._running.remove(entry)
                for session, heavy in list(self._heavy_by_session.items()):
                    if heavy is entry:
                        del self._heavy_by_session[session]
                entry.done.set()
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
            if call:
                self._calls -= 1
            kind = entries[0].job.kind
            per_job = seconds / len(entries)
            self._seconds[kind] = per_job if kind not in self._seconds else 0.7 * self._seconds[kind] + 0.3 * per_job
            self._lock.notify_all()

    # ---- running -----------------------------------------------------------------------
    def _run_inline(self, entry: _Entry) -> None:
        with self._lock:
            if entry.running or entry.done.is_set() or entry not in self._queue:
                return
            self._queue.remove(entry)
            entry.running = True
            self._running.append(entry)
        start = time.perf_counter()
        try:
            outcome = entry.job.fn(*entry.job.args)
        except Exception as error:  # noqa: BLE001 - handed to the waiters
            outcome = error
        self._finish([entry], [outcome], time.perf_counter() - start, call=False)

    def _next(self, now: float) -> tuple[list[_Entry], float | None]:
        """The entries to dispatch now (one job or one batch), or ([], seconds to wait)."""
        heavy_running = sum(e.job.heavy for e in self._running)
        candidates = [e for e in self._ordered(now) if not e.job.heavy or heavy_running < self.heavy_slots]
        if not candidates:
            return [], None
        entry = candidates[0]
        batch = entry.job.batch
        if batch is None:
            return [entry], None
        wait = entry.queued_at + self.batch_window_s - now
        if self._calls and wait > 0:  # busy: give companions a moment to arrive
            return [], wait
        members = [e for e in self._queue if e.job.batch is not None and e.job.batch.key == batch.key]
        return members[:batch.limit], None

    def _dispatch_loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    timeout = None
                    if self._calls < self.workers:  # a free worker (a running batch holds one, not one per member)
                        entries, timeout = self._next(time.monotonic())
                        if entries:
                            break
                    self._lock.wait(timeout)
                for entry in entries:
                    self._queue.remove(entry)
                    entry.running = True
                    self._running.append(entry)
                self._calls += 1
            self._launch(entries)

    def _launch(self, entries: list[_Entry]) -> None:
        start = time.perf_counter()
        try:
            if len(entries) == 1:
                future = self._pool.submit(_call, entries[0].job.fn, entries[0].job.args)
            else:
                batch = entries[0].job.batch
                future = self._pool.submit(batch.fn, [e.job.batch.member for e in entries])
                self.stats["batched calls"] += 1
                self.stats["batched jobs"] += len(entries)
        except BrokenProcessPool as error:  # a worker died (e.g. killed for memory): start afresh
            self._restart(error, entries)
            return

        def finished(done: Future) -> None:
            try:
                value = done.result()
                outcomes = [value] if len(entries) == 1 else list(value)
            except BrokenProcessPool as error:
                self._restart(error, entries)
                return
            except Exception as error:  # noqa: BLE001 - the call itself failed: every member gets it
                outcomes = [error] * len(entries)
            self._finish(entries, outcomes, time.perf_counter() - start)

        future.add_done_callback(finished)

    def _restart(self, error: BaseException, entries: list[_Entry]) -> None:
        """A worker process died: its jobs fail with a clear message, a new pool takes the queue."""
        with self._lock:
            broken, self._pool = self._pool, self._new_pool()
            self.stats["pool restarts"] += 1
        broken.shutdown(wait=False, cancel_futures=True)
        failure = WorkerLost(f"a worker process stopped while computing this ({error}); please try again")
        self._finish(entries, [failure] * len(entries), 0.0)


_SERVICE: JobService | None = None
_SERVICE_LOCK = threading.Lock()


def service() -> JobService:
    """The process's job service, created on first use from the environment:
    SOAE_WORKERS (worker processes; default: one per core; 0: compute in the script threads),
    SOAE_HEAVY_JOBS (heavy jobs at once; default: SOAE_WORKERS), SOAE_BATCH_WINDOW_MS
    (default 30; 0 switches batching's wait off) and SOAE_BATCHING (1 on, default; 0 off)."""
    global _SERVICE
    with _SERVICE_LOCK:
        if _SERVICE is None:
            workers = int(os.environ.get("SOAE_WORKERS", str(os.cpu_count() or 1)))
            heavy = os.environ.get("SOAE_HEAVY_JOBS")
            _SERVICE = JobService(workers, int(heavy) if heavy else None,
                                  float(os.environ.get("SOAE_BATCH_WINDOW_MS", "30")) / 1000,
                                  preload=("soae_app.compute",))
            _SERVICE.start_workers()
        return _SERVICE


def batching_enabled() -> bool:
    """SOAE_BATCHING=0 switches dynamic batching off (each job runs alone)."""
    return os.environ.get("SOAE_BATCHING", "1") != "0"

