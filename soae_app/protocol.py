"""A Streamlit client without a browser: one session = one websocket speaking Streamlit's own
protobuf protocol (``BackMsg`` up, ``ForwardMsg`` down), as the browser does.

Used by the classroom benchmark (``bench/bench_classroom.py``) and the concurrency test: a
client costs almost nothing, so 30+ concurrent sessions load the server, not the driver.

Protocol (Streamlit 1.67): websocket ``/_stcore/stream`` with subprotocol ``streamlit``; the client
sends ``BackMsg(rerun_script=ClientState(...))`` and reads ``ForwardMsg``s until
``script_finished``. ``context_info.url`` must be the page URL *without* the query string (as a
browser sends it): with the query in it, URL-bound widgets silently keep their defaults.
Errors show in the stream as ``exception`` elements and ``alert`` elements of format ERROR.

Through ``./lab serve`` (replicas behind nginx) a client acts as a browser does: :func:`first_visit`
GETs the page and keeps the affinity cookie the proxy sets, a :class:`Session` made with that
``cookie`` sends it with its websocket, and ``Session.replica`` is the replica the proxy named in
its ``X-Soae-Replica`` header (replica test and benchmark).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import hashlib
import io
import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState, ContextInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates

from soae_app.replicas import AFFINITY_COOKIE, REPLICA_HEADER

ALERT_ERROR = 1  # Alert.Format.ERROR
FINISHED_STATUSES = {ForwardMsg.FINISHED_SUCCESSFULLY: "ok", ForwardMsg.FINISHED_WITH_COMPILE_ERROR: "compile error",
                     ForwardMsg.FINISHED_EARLY_FOR_RERUN: "interrupted",
                     ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY: "ok"}
# Columns that hold wall times: they differ between two runs of the same computation.
TIME_COLUMNS = ("Time (ms)", "Time (s)", "Time ÷ time at the largest τ")


@dataclass
class Widget:
    """A widget the last run drew: its protocol id, element type and value field."""

    id: str
    kind: str
    proto: Any


@dataclass
class PageRun:
    """One script run as the client saw it.

    seconds: from sending the rerun request to ``script_finished`` (server time plus one local
    round trip). status: "ok", "interrupted", "compile error", "page not found" or "timeout".
    exceptions / errors: texts of ``exception`` elements and ``st.error`` alerts.
    content: the final text of every element by position (titles, markdown, captions, alerts,
    tables without wall-time columns, figure and image digests) — equal content, equal page.
    """

    page: str
    query: str
    seconds: float
    status: str
    exceptions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    content: dict[str, str] = field(default_factory=dict)
    widgets: dict[str, Widget] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0

    @property
    def clean(self) -> bool:
        """True when the run finished with no exception and no st.error."""
        return self.status == "ok" and not self.exceptions and not self.errors


def _table_text(data: bytes) -> str:
    import pyarrow as pa

    table = pa.ipc.open_stream(io.BytesIO(data)).read_all().to_pandas()
    table = table.drop(columns=[c for c in table.columns if str(c) in TIME_COLUMNS])
    return table.to_csv(float_format="%.6g")


def _rounded(value: Any) -> Any:
    """Every number of a plotly spec to 6 significant digits, as tables are compared
    (:func:`_table_text`); typed arrays (``{"dtype", "bdata"}``) decoded first."""
    if isinstance(value, dict):
        if set(value) >= {"dtype", "bdata"}:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            return _rounded(array.tolist())
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _figure_text(spec: str) -> str:
    """A plotly spec without its per-render ids (uids), numbers to 6 significant digits."""
    figure = json.loads(spec)
    for trace in figure.get("data", []):
        trace.pop("uid", None)
    return hashlib.sha1(json.dumps(_rounded(figure), sort_keys=True).encode()).hexdigest()


def element_text(element: Any) -> tuple[str, str]:
    """(element type, comparable text) of a ``delta.new_element``."""
    kind = element.WhichOneof("type")
    value = getattr(element, kind)
    if kind in ("markdown", "heading", "alert", "text", "code"):
        return kind, value.body
    if kind == "exception":
        return kind, f"{value.type}: {value.message}"
    if kind == "dataframe":
        data = value.arrow_data.data
        return kind, _table_text(data) if data else f"lazy {value.lazy_data.row_count} rows"
    if kind == "plotly_chart":
        return kind, _figure_text(value.spec) if value.spec else ""
    if kind == "imgs":
        return kind, " | ".join(f"{img.caption} {hashlib.sha1(img.url.encode()).hexdigest()[:8]}" for img in value.imgs)
    if hasattr(value, "label"):
        return kind, value.label
    return kind, ""


def widget_key(widget_id: str) -> str:
    """The user key of a widget id (``$$ID-<hash>-<key>``), or the id itself without a key."""
    parts = widget_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[2] != "None" else widget_id


def answering_replica(header: str | None) -> str | None:
    """The replica that answered, from the proxy's ``X-Soae-Replica`` header (after a failed try
    nginx lists every one it tried: "a, b"); None without the header."""
    return header.split(",")[-1].strip() if header else None


def first_visit(base_url: str, cookie: str | None = None, timeout_s: float = 60) -> tuple[str | None, str | None]:
    """GET the page as a browser's first request does; returns (the affinity cookie "name=value"
    the proxy set, else the one sent; the replica that answered)."""
    request = urllib.request.Request(base_url.rstrip("/") + "/", headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()
        replica = answering_replica(response.headers.get(REPLICA_HEADER))
        for value in response.headers.get_all("Set-Cookie") or []:
            if value.startswith(f"{AFFINITY_COOKIE}="):
                cookie = value.split(";", 1)[0]
    return cookie, replica


class Session:
    """One Streamlit session over a websocket. Use ``async with Session(base_url) as s``, or
    :meth:`open` and :meth:`close` for a session kept across tasks.

    cookie: a "name=value" Cookie header to send (the affinity cookie of :func:`first_visit`, so
    the websocket follows the page to its replica behind ``./lab serve``). ``replica``: after
    opening, the replica the proxy named (None without a proxy)."""

    def __init__(self, base_url: str, timeout_s: float = 600, cookie: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.cookie = cookie
        self.socket = None
        self.replica: str | None = None
        self.widgets: dict[str, Widget] = {}

    async def open(self) -> Session:
        """Open the websocket (sending the page's Origin and the cookie, as a browser does)."""
        url = self.base_url.replace("http", "ws", 1) + "/_stcore/stream"
        self.socket = await websockets.connect(url, subprotocols=["streamlit"], max_size=None,
                                               origin=self.base_url, open_timeout=self.timeout_s,
                                               ping_interval=None,
                                               additional_headers={"Cookie": self.cookie} if self.cookie else None)
        self.replica = answering_replica(self.socket.response.headers.get(REPLICA_HEADER))
        return self

    async def close(self) -> None:
        await self.socket.close()

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, page: str = "", query: dict[str, Any] | None = None,
                  widgets: dict[str, Any] | None = None) -> PageRun:
        """Rerun the script on ``page`` (URL path, "" for the default page) with the URL
        ``query`` and the given widget values (by user key; the widget must have been drawn by
        an earlier run of this session). Returns when the run has finished, or with status
        "timeout" after ``timeout_s``; raises websockets' ConnectionClosed if the server goes away."""
        query_string = urlencode(query or {}, doseq=True)
        state = ClientState(query_string=query_string, page_name=page,
                            context_info=ContextInfo(url=f"{self.base_url}/{page}", timezone="UTC", locale="en-GB"))
        if widgets:
            state.widget_states.CopyFrom(self._widget_states(widgets))
        message = BackMsg(rerun_script=state)
        start = time.perf_counter()
        await self.socket.send(message.SerializeToString())
        result = PageRun(page=page, query=query_string, seconds=0.0, status="timeout")
        elements: dict[tuple[int, ...], Any] = {}
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    data = await self.socket.recv()
                    result.messages += 1
                    result.bytes += len(data)
                    forward = ForwardMsg.FromString(data)
                    kind = forward.WhichOneof("type")
                    if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                        elements[tuple(forward.metadata.delta_path)] = forward.delta.new_element
                        self._inspect(forward.delta.new_element, result)
                    elif kind == "page_not_found":
                        result.status = "page not found"
                    elif kind == "script_finished":
                        if result.status != "page not found":
                            result.status = FINISHED_STATUSES.get(forward.script_finished, "unknown")
                        if forward.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                            break
        except TimeoutError:
            pass
        result.seconds = time.perf_counter() - start
        for path, element in sorted(elements.items()):
            kind, text = element_text(element)
            result.content[f"{'.'.join(map(str, path))}:{kind}"] = text
        result.widgets = dict(self.widgets)
        return result

    def _inspect(self, element: Any, result: PageRun) -> None:
        kind = element.WhichOneof("type")
        value = getattr(element, kind)
        if kind == "exception":
            result.exceptions.append(f"{value.type}: {value.message}")
        elif kind == "alert" and value.format == ALERT_ERROR:
            result.errors.append(value.body)
        widget_id = getattr(value, "id", "")
        if isinstance(widget_id, str) and widget_id.startswith("$$ID"):
            self.widgets[widget_key(widget_id)] = Widget(widget_id, kind, value)

    def _widget_states(self, values: dict[str, Any]) -> WidgetStates:
        states = WidgetStates()
        for key, value in values.items():
            if key not in self.widgets:
                raise KeyError(f"no widget with key {key!r} drawn yet; drawn: {sorted(self.widgets)}")
            widget = self.widgets[key]
            state = WidgetState(id=widget.id)
            if widget.kind == "slider" and not widget.proto.options:
                state.double_array_value.data.extend(value if isinstance(value, list) else [value])
            elif widget.kind in ("slider", "multiselect", "button_group"):  # select_slider: a Slider with options
                state.string_array_value.data.extend(value if isinstance(value, list) else [value])
            elif widget.kind == "checkbox":
                state.bool_value = bool(value)
            elif widget.kind == "number_input":
                state.double_value = float(value)
            elif widget.kind == "button":
                state.trigger_value = True
            else:  # selectbox, radio, text input: the shown option
                state.string_value = str(value)
            states.widgets.append(state)
        return states


async def run_sessions(base_url: str, scripts: list[list[dict[str, Any]]], start_together: bool = True,
                       timeout_s: float = 600, in_step: bool = False) -> list[list[PageRun]]:
    """Run several sessions at once; ``scripts[i]`` is session i's list of :meth:`Session.run`
    keyword arguments (page, query, widgets), run in order. With ``in_step`` (scripts of one
    length) every session starts its next run only when all have finished the current one.
    Returns each session's runs."""
    gate = asyncio.Event()
    if in_step and len({len(script) for script in scripts}) > 1:
        raise ValueError("in_step needs scripts of one length")
    barrier = asyncio.Barrier(len(scripts)) if in_step and scripts else None

    async def one(script: list[dict[str, Any]]) -> list[PageRun]:
        async with Session(base_url, timeout_s) as session:
            if start_together:
                await gate.wait()
            runs = []
            for step in script:
                runs.append(await session.run(**step))
                if barrier is not None:
                    await barrier.wait()
            return runs

    tasks = [asyncio.create_task(one(script)) for script in scripts]
    await asyncio.sleep(0.2)  # every socket open before the gate
    gate.set()
    return list(await asyncio.gather(*tasks))


def page_paths(app_file: str | Path) -> dict[str, str]:
    """{page's URL path: the page name a client requests} in navigation order, read from
    ``PAGES`` in ``app.py`` (not imported: it is a Streamlit script). The default page is served
    at "/" and requested as "" (asking for its URL path answers "page not found")."""
    tree = ast.parse(Path(app_file).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PAGES" for t in node.targets):
            paths = [row[-1] for row in ast.literal_eval(node.value)]
            return {path: "" if position == 0 else path for position, path in enumerate(paths)}
    raise ValueError(f"{app_file} defines no PAGES list")


def main() -> None:
    """``python -m soae_app.protocol [URL]``: a health check of a running server — one session
    opens every page; prints each page's seconds and errors; exit status 1 if any failed."""
    import sys

    base = sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8501"
    pages = page_paths(Path(__file__).resolve().parents[1] / "app.py")
    runs = asyncio.run(run_sessions(base, [[{"page": request} for request in pages.values()]], timeout_s=300))[0]
    for path, run in zip(pages, runs, strict=False):
        problems = "; ".join(run.exceptions + run.errors)
        print(f"{path:<22} {run.status:<14} {run.seconds:6.2f} s  {problems}")
    sys.exit(0 if all(run.clean for run in runs) else 1)


if __name__ == "__main__":
    main()
