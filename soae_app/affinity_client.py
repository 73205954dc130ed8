"""A browser's view of ``./lab serve``, without a browser: its first visit (which sets the proxy's
affinity cookie) and a Streamlit session over the websocket protocol that sends that cookie.

A session is one websocket at ``/_stcore/stream`` (subprotocol ``streamlit``). To run a page the
client sends a ``BackMsg`` with ``rerun_script`` (the page's URL path and query string, and the page
URL *without* the query, as a browser sends it — with the query in it, URL-bound widgets keep their
defaults) and reads ``ForwardMsg``s until ``script_finished``; exceptions shown by the app and
``st.error`` alerts are collected (the approach of /work/shared/NOTES.md). As a browser does, the
client sends the page's ``Origin`` and the affinity cookie, and keeps the replica the proxy names
in its ``X-Soae-Replica`` header. Used by the replica test and the replica benchmark.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import ClientConnection, connect

from soae_app.replicas import AFFINITY_COOKIE, REPLICA_HEADER

_ALERT_ERROR = 1  # streamlit.proto.Alert_pb2.Alert.Format.ERROR


@dataclass
class PageRun:
    """One script run: seconds from the request to ``script_finished``, the texts of the exceptions
    and ``st.error`` alerts the app showed, and ``script_finished``'s status (-1: no end seen)."""

    seconds: float
    exceptions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    status: int = -1

    @property
    def clean(self) -> bool:
        """Finished successfully, without exceptions or error alerts."""
        return self.status == ForwardMsg.FINISHED_SUCCESSFULLY and not self.exceptions and not self.errors


def answering_replica(header: str | None) -> str | None:
    """The replica that answered: after a failed try nginx lists every one it tried ("a, b")."""
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


class AffinitySession:
    """One Streamlit session through the proxy; ``replica`` is where it landed. Use ``async with``,
    or :meth:`open` and :meth:`close` for a session kept across tasks."""

    def __init__(self, base_url: str, cookie: str | None = None, timeout_s: float = 600) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookie = cookie
        self.timeout_s = timeout_s
        self.socket: ClientConnection | None = None
        self.replica: str | None = None

    async def open(self) -> AffinitySession:
        parts = urlsplit(self.base_url)
        headers = {"Origin": f"{parts.scheme}://{parts.netloc}"} | ({"Cookie": self.cookie} if self.cookie else {})
        self.socket = await connect(f"ws://{parts.netloc}/_stcore/stream", subprotocols=["streamlit"],
                                    additional_headers=headers, open_timeout=self.timeout_s, max_size=None,
                                    ping_interval=None)
        self.replica = answering_replica(self.socket.response.headers.get(REPLICA_HEADER))
        return self

    async def close(self) -> None:
        await self.socket.close()

    async def __aenter__(self) -> AffinitySession:  # noqa: PYI034
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, page: str = "", query: dict[str, str] | None = None) -> PageRun:
        """Run ``page`` (its URL path, "" for the default page) with the URL ``query``; raises
        websockets' ConnectionClosed if the replica goes away, TimeoutError after ``timeout_s``."""
        message = BackMsg()
        message.rerun_script.query_string = urlencode(query or {})
        message.rerun_script.page_name = page
        message.rerun_script.context_info.url = f"{self.base_url}/{page}"
        start = time.perf_counter()
        await self.socket.send(message.SerializeToString())
        result = PageRun(seconds=0.0)
        async with asyncio.timeout(self.timeout_s):
            while True:
                forward = ForwardMsg.FromString(await self.socket.recv())
                kind = forward.WhichOneof("type")
                if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                    element = forward.delta.new_element
                    if element.WhichOneof("type") == "exception":
                        result.exceptions.append(f"{element.exception.type}: {element.exception.message}")
                    elif element.WhichOneof("type") == "alert" and element.alert.format == _ALERT_ERROR:
                        result.errors.append(element.alert.body)
                elif kind == "script_finished":
                    result.status = forward.script_finished
                    if forward.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                        break
        result.seconds = time.perf_counter() - start
        return result
