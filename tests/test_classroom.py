"""A class on one server: concurrent sessions through Streamlit's own protocol see exactly what a
lone session sees, on every page, with no exception and no error; bad URL values are answered
with the defaults, never a traceback, and never hurt another session."""

from __future__ import annotations

import asyncio
import re

import pytest

from soae_app.headless import ROOT, free_port, start_streamlit, stop, wait_until_healthy
from soae_app.protocol import PageRun, page_paths, run_sessions

pytestmark = pytest.mark.slow

PAGES = page_paths(ROOT / "app.py")
STUDENTS = [{"cls": c, "ex": e} for c, e in (("Trouser", "2"), ("Bag", "5"), ("Sandal", "1"), ("Coat", "7"),
                                               ("Ankle boot", "3"))]


def visit_every_page(query: dict[str, str]) -> list[dict]:
    return [{"page": request, "query": query} for request in PAGES.values()]


WALL_TIME = re.compile(r"\d+(\.\d+)? s\b")  # "trained in 0.41 s": differs from run to run


def shown(run: PageRun) -> list[tuple[str, str]]:
    """What the page shows, in order, without placeholders left by finished waits and with wall
    times masked (tables come without their time columns, see soae_app.protocol)."""
    return [(key.split(":")[1], WALL_TIME.sub("<t> s", text)) for key, text in run.content.items()
            if not key.endswith(":empty") and "waiting in the queue" not in text and ": running —" not in text]


def serve_and_run(waves: list[list[list[dict]]]) -> list[list[PageRun]]:
    """On a fresh server: each wave's sessions at once (one script per session), the waves one
    after another. Returns every session's runs, in order."""
    port = free_port()
    server = start_streamlit(port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, server, timeout_s=300)
        return [runs for wave in waves for runs in asyncio.run(run_sessions(base, wave, timeout_s=600))]
    finally:
        stop(server)


@pytest.fixture(scope="module")
def together() -> list[list[PageRun]]:
    """Five students on five images, every page, all at once — plus one student whose URL holds
    malformed values, at the same moment."""
    malformed = {"eps": "banana", "N": "-3", "hvp": "<script>", "cls": "Nope", "ex": "99", "tau": "1e999"}
    return serve_and_run([[visit_every_page(q) for q in STUDENTS] + [visit_every_page(malformed)]])


def test_five_concurrent_sessions_over_every_page_have_no_exception_or_error(together):
    for runs in together:
        assert [run.status for run in runs] == ["ok"] * len(PAGES)
        for run in runs:
            assert not run.exceptions, (run.page, run.exceptions)
        assert not [run.errors for run in runs if run.errors]


def test_concurrent_sessions_see_what_a_lone_session_sees(together):
    # Two of the five students again, one by one on a fresh server (nothing cached): a mix-up
    # between concurrent sessions would show in any of them, and each lone pass costs ~20 s.
    lone_students = STUDENTS[:2]
    alone = [run for runs in serve_and_run([[visit_every_page(q)] for q in lone_students]) for run in runs]
    concurrent = [run for runs in together[:len(lone_students)] for run in runs]
    assert len(alone) == len(concurrent)
    for lone, busy in zip(alone, concurrent, strict=False):
        assert (lone.page, lone.query) == (busy.page, busy.query)
        assert shown(lone) == shown(busy), f"page {busy.page!r} with {busy.query} differs"


def test_malformed_url_values_fall_back_to_the_defaults(together):
    for run in together[-1]:
        assert run.clean, (run.page, run.status, run.exceptions, run.errors)
    lab = together[-1][0]
    assert any("True class" in text for kind, text in shown(lab) if kind == "markdown")


def test_figures_are_compared_to_six_significant_digits_like_tables():
    """A batch member's trace equals its lone run to float tolerance, not bit for bit: figures
    must compare like tables (``%.6g``) — and still tell a real difference apart."""
    import base64
    import json

    import numpy as np

    from soae_app.protocol import _figure_text

    def spec(values, typed=False):
        y = ({"dtype": "f8", "bdata": base64.b64encode(np.asarray(values, dtype="f8").tobytes()).decode()}
             if typed else values)
        return json.dumps({"data": [{"type": "scatter", "y": y, "uid": str(len(values) * typed)}], "layout": {}})

    base = [1.0, 0.0123456789, 3e-7]
    assert _figure_text(spec(base)) == _figure_text(spec([v * (1 + 1e-12) for v in base]))
    assert _figure_text(spec(base)) == _figure_text(spec(base, typed=True))
    assert _figure_text(spec(base)) != _figure_text(spec([1.0, 0.0123457789, 3e-7]))


def test_sessions_in_step_start_each_run_only_when_all_finished_the_last(monkeypatch):
    """The burst benchmark's cold views must not meet early students' warm reruns."""
    from soae_app import protocol

    events = []

    class FakeSession:
        def __init__(self, base_url, timeout_s):
            pass

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

        async def run(self, page="", query=None):
            events.append(("start", page, query["i"]))
            await asyncio.sleep(0.01 * query["i"])  # session i is slower the larger i
            events.append(("end", page, query["i"]))
            return page

    monkeypatch.setattr(protocol, "Session", FakeSession)
    scripts = [[{"page": "cold", "query": {"i": i}}, {"page": "warm", "query": {"i": i}}] for i in range(4)]
    runs = asyncio.run(protocol.run_sessions("http://x", scripts, in_step=True))
    assert runs == [["cold", "warm"]] * 4
    last_cold_end = max(n for n, e in enumerate(events) if e[:2] == ("end", "cold"))
    first_warm_start = min(n for n, e in enumerate(events) if e[:2] == ("start", "warm"))
    assert last_cold_end < first_warm_start
    events.clear()  # without in_step the fast session reruns while slow ones are still cold
    asyncio.run(protocol.run_sessions("http://x", scripts))
    assert min(n for n, e in enumerate(events) if e[:2] == ("start", "warm")) < max(
        n for n, e in enumerate(events) if e[:2] == ("end", "cold"))
    with pytest.raises(ValueError, match="one length"):
        asyncio.run(protocol.run_sessions("http://x", [scripts[0], scripts[0][:1]], in_step=True))
