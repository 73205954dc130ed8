"""The job service: bounded workers, queue positions, cancelling, sharing, one heavy job per
session, batching (bad members fail alone) and no batching wait on an idle server."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from soae_app.worker_pool import Batch, Cancelled, Job, JobService, WorkerLost, _Entry


def square_all(members: list) -> list:
    """A batch function: one result per member, an exception for a bad one; records the batch size."""
    return [ValueError(f"member must be a number, got {m!r}") if not isinstance(m, (int, float)) else (m * m, len(members))
            for m in members]


def square_alone(member) -> tuple:
    return square_all([member])[0] if isinstance(member, (int, float)) else (_ for _ in ()).throw(
        ValueError(f"member must be a number, got {member!r}"))


def slow_batch(members: list) -> list:
    """A batch function that takes 5 s (module level: the worker processes unpickle it by name)."""
    time.sleep(5.0)
    return list(members)


def batched(member, key="square") -> Job:
    return Job(key=("square", member), fn=square_alone, args=(member,), kind="square",
               batch=Batch(key=key, fn=square_all, member=member))


@pytest.fixture(scope="module")
def one_worker():
    service = JobService(workers=1, heavy_slots=1, batch_window_s=0.03)
    service.run(Job(key="warm-up", fn=time.sleep, args=(0,)))  # the worker process is up
    yield service
    service.shutdown()


def test_queued_heavy_job_reports_its_position_and_can_be_cancelled(one_worker, tmp_path):
    cancelled_before = one_worker.stats["cancelled"]
    blocker = one_worker.submit(Job(key="block-1", fn=time.sleep, args=(1.5,), heavy=True), session="a")
    marker = tmp_path / "ran"
    queued = one_worker.submit(Job(key="touch", fn=Path.touch, args=(marker,), heavy=True), session="b")
    other = one_worker.submit(Job(key="other", fn=time.sleep, args=(0,), heavy=True), session="c")
    deadline = time.monotonic() + 10
    while blocker.position() != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert blocker.position() == 0
    assert (queued.position(), other.position()) == (1, 2)
    assert queued.estimate_s() > 0
    queued.cancel()
    assert other.position() == 1
    with pytest.raises(Cancelled):
        queued.result()
    blocker.result(timeout_s=30)
    other.result(timeout_s=30)
    assert not marker.exists()  # the cancelled job never ran
    assert one_worker.stats["cancelled"] == cancelled_before + 1


def test_identical_jobs_run_once_and_share_the_result(one_worker):
    shared_before = one_worker.stats["shared"]
    blocker = one_worker.submit(Job(key="block-2", fn=time.sleep, args=(0.5,)))
    first = one_worker.submit(Job(key=("pow", 3), fn=pow, args=(3, 2)), session="a")
    second = one_worker.submit(Job(key=("pow", 3), fn=pow, args=(3, 2)), session="b")
    assert first.result(timeout_s=30) == second.result(timeout_s=30) == 9
    blocker.result(timeout_s=30)
    assert one_worker.stats["shared"] == shared_before + 1
    again = one_worker.submit(Job(key=("pow", 3), fn=pow, args=(3, 2)), session="c")
    assert again.cached and again.result() == 9


def test_one_heavy_job_per_session_the_new_one_replaces_the_queued_one(one_worker):
    one_worker.submit(Job(key="block-3", fn=time.sleep, args=(0.5,), heavy=True), session="x")
    old = one_worker.submit(Job(key=("unit", 1), fn=pow, args=(2, 1), heavy=True), session="a")
    new = one_worker.submit(Job(key=("unit", 2), fn=pow, args=(2, 2), heavy=True), session="a")
    with pytest.raises(Cancelled):
        old.result(timeout_s=30)
    assert new.result(timeout_s=30) == 4


def test_cancel_of_a_shared_job_keeps_it_for_the_other_session(one_worker):
    one_worker.submit(Job(key="block-4", fn=time.sleep, args=(0.5,)))
    mine = one_worker.submit(Job(key="shared", fn=pow, args=(2, 5)), session="a")
    theirs = one_worker.submit(Job(key="shared", fn=pow, args=(2, 5)), session="b")
    mine.cancel()
    assert theirs.result(timeout_s=30) == 32


def test_batched_members_get_their_own_results_and_a_bad_member_fails_alone(one_worker):
    calls_before = one_worker.stats["batched calls"]
    one_worker.submit(Job(key="block-5", fn=time.sleep, args=(0.8,)))  # busy: the members queue up
    tickets = {m: one_worker.submit(batched(m), session=m) for m in (2, 3, "x", 5)}
    assert tickets[2].result(timeout_s=30) == (4, 4)  # (square, size of the batch it ran in)
    assert tickets[3].result(timeout_s=30) == (9, 4)
    assert tickets[5].result(timeout_s=30) == (25, 4)
    with pytest.raises(ValueError, match="member must be a number"):
        tickets["x"].result(timeout_s=30)
    assert one_worker.stats["batched calls"] == calls_before + 1


def test_idle_server_dispatches_a_batchable_job_without_waiting():
    service = JobService(workers=1, batch_window_s=10.0)  # a window far longer than the test
    try:
        ticket = service.submit(batched(7))
        assert ticket.result(timeout_s=60) == (49, 1)  # ran at once, alone, despite the 10 s window
    finally:
        service.shutdown()


def test_dispatch_rule_idle_at_once_busy_waits_the_window_then_takes_every_companion():
    service = JobService(workers=0, batch_window_s=5.0)  # no dispatcher thread: the rule alone
    first = _Entry(batched(4), queued_at=100.0)
    service._queue.append(first)
    assert service._next(100.0) == ([first], None)  # idle: no wait
    service._calls = 1  # one call in a worker: busy
    entries, wait = service._next(100.0)
    assert entries == [] and wait == pytest.approx(5.0)
    other_settings = _Entry(batched(6, key="cube"), queued_at=101.0)
    companion = _Entry(batched(5), queued_at=102.0)
    service._queue += [other_settings, companion]
    assert service._next(105.1) == ([first, companion], None)


def test_a_running_batch_holds_one_worker_not_one_per_member():
    """Two workers, one busy with a batch of two members: the other still takes the next job.
    (A batch used to count once per member, so a running batch of two kept both workers 'busy'
    and every other job waited for it while a worker idled.)"""
    service = JobService(workers=2, batch_window_s=0.5)
    try:
        warm = [service.submit(Job(key=("warm-up", i), fn=time.sleep, args=(0.5,))) for i in range(2)]
        [ticket.result(timeout_s=120) for ticket in warm]  # both worker processes are up (spawning is slow under load)
        blocker = service.submit(Job(key="blocker", fn=time.sleep, args=(0.3,)))
        members = [service.submit(Job(key=("slow", m), fn=pow, args=(m, 1),
                                      batch=Batch(key="slow", fn=slow_batch, member=m))) for m in (1, 2)]
        blocker.result(timeout_s=60)
        deadline = time.monotonic() + 30
        while not all(member.position() == 0 for member in members) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [member.position() for member in members] == [0, 0]  # running, as one call
        quick = service.submit(Job(key="quick", fn=pow, args=(2, 3)))
        assert quick.result(timeout_s=60) == 8
        assert not any(member.done() for member in members)  # it ran beside the batch, not after it
        assert [member.result(timeout_s=60) for member in members] == [1, 2]
        assert service.stats["batched calls"] == 1
    finally:
        service.shutdown()


def test_inline_service_without_workers_runs_in_the_callers_thread():
    service = JobService(workers=0)
    assert service.run(Job(key="p", fn=pow, args=(2, 10))) == 1024
    with pytest.raises(ValueError, match="member must be a number"):
        service.run(batched("y"))


def test_a_dead_worker_fails_its_job_with_a_message_and_the_pool_recovers():
    service = JobService(workers=1)
    try:
        crashed = service.submit(Job(key="die", fn=os._exit, args=(3,)))
        with pytest.raises(WorkerLost, match="worker process stopped"):
            crashed.result(timeout_s=60)
        assert service.run(Job(key="after", fn=pow, args=(3, 3))) == 27
        assert service.stats["pool restarts"] == 1
    finally:
        service.shutdown()


def test_quick_jobs_pass_slow_ones_until_the_slow_one_has_waited_its_length():
    service = JobService(workers=0)
    service._seconds = {"slow": 10.0, "fast": 0.5}  # running means of the two kinds
    slow = _Entry(Job(key="s", fn=pow, kind="slow"), queued_at=100.0)
    fast = _Entry(Job(key="f", fn=pow, kind="fast"), queued_at=101.0)
    heavy = _Entry(Job(key="h", fn=pow, kind="fast", heavy=True), queued_at=90.0)
    service._queue += [heavy, slow, fast]
    assert service._next(101.0) == ([fast], None)  # shortest expected first; heavy work last
    late = _Entry(Job(key="f2", fn=pow, kind="fast"), queued_at=111.0)
    service._queue[:] = [heavy, slow, late]
    assert service._next(111.0) == ([slow], None)  # 11 s of waiting outweigh its 9.5 s handicap
    assert service._ordered(111.0) == [slow, late, heavy]


def test_workers_exit_when_their_server_is_killed():
    """A server killed with SIGKILL (or a test process that ends without the pool's shutdown) must
    not leave its worker processes behind."""
    import signal
    import subprocess
    import sys

    program = ("import os, sys, time\n"
               "from soae_app.worker_pool import Job, JobService\n"
               "service = JobService(workers=1)\n"
               "print(service.run(Job(key='pid', fn=os.getpid, args=())), flush=True)\n"
               "time.sleep(600)\n")
    server = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        worker = int(server.stdout.readline())
        os.kill(worker, 0)  # alive while the server is
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail(f"worker {worker} outlived its killed server by 30 s")
    finally:
        server.kill()


PREPARED_IN: list[int] = []  # process ids where prepare_worker below ran


def prepare_worker() -> None:
    """This module as a preload module: the pool runs this once in each worker."""
    PREPARED_IN.append(os.getpid())


def prepared_here() -> bool:
    return os.getpid() in PREPARED_IN


def test_a_preloaded_modules_prepare_worker_runs_in_each_worker_before_its_first_job():
    service = JobService(workers=1, preload=(__name__,))
    try:
        assert service.run(Job(key="prepared?", fn=prepared_here)) is True
    finally:
        service.shutdown()
    assert not prepared_here()  # not in the server process


def test_app_workers_prepare_the_single_image_solver():
    from soae_app import compute
    from soae_core import krylov

    krylov._host_kernels.cache_clear()
    compute.prepare_worker()
    assert krylov._host_kernels.cache_info().currsize == 1


def test_a_worker_loads_each_model_once():
    """Jobs name their models by spec; the worker keeps each one it has loaded (a reload per job
    would read the weights from disk for every student)."""
    from soae_app import compute

    spec = compute.ModelSpec("fmnist-cnn-std", "float32", "")
    assert compute.model(spec) is compute.model(spec)
