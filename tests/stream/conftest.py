"""Fixtures for the live-stream consumer: the fake OpenCTI, a scripted SSE server for wire-level
cases the fake never produces (non-indicator objects, malformed JSON), an event collector that
tests wait on, and a log capture that fails any test whose logs contain the token."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from loguru import logger

from reconciler.opencti.state import MemoryStore, PositionStore
from reconciler.opencti.stream import StreamConsumer, StreamEvent, StreamTuning
from reconciler.sandbox.opencti import OpenCTIEmulator

TOKEN = "tok-SECRET-7f3a9c"
STREAM_ID = "stream-live-1"


class Collector:
    """Receives batches (``on_events``) and statuses (``on_status``); tests wait on it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.batches: list[list[StreamEvent]] = []
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.fail: Callable[[list[StreamEvent]], bool] = lambda batch: False
        self.calls = 0
        self.delivered_at: list[float] = []

    def on_events(self, batch: list[StreamEvent]) -> None:
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
            if self.fail(batch):
                raise RuntimeError("handler exploded")
            self.batches.append(batch)
            self.delivered_at.append(time.monotonic())
            self.cond.notify_all()

    def on_status(self, kind: str, info: dict[str, Any]) -> None:
        with self.cond:
            self.statuses.append((kind, info))
            self.cond.notify_all()

    @property
    def events(self) -> list[StreamEvent]:
        with self.cond:
            return [e for b in self.batches for e in b]

    def count(self, which: str, **match: Any) -> int:
        with self.cond:
            return sum(
                1
                for k, info in self.statuses
                if k == which and all(info.get(key) == v for key, v in match.items())
            )

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; statuses={self.statuses[-5:]}")
                self.cond.wait(left)

    def wait_events(self, n: int, timeout: float = 10.0) -> list[StreamEvent]:
        self.wait(lambda: sum(len(b) for b in self.batches) >= n, timeout)
        return self.events

    def wait_status(self, which: str, n: int = 1, timeout: float = 10.0, **match: Any) -> None:
        self.wait(lambda: self.count(which, **match) >= n, timeout)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def emu() -> Iterator[OpenCTIEmulator]:
    server = OpenCTIEmulator(
        token=TOKEN, stream_id=STREAM_ID, heartbeat_interval=0.2, retry_ms=50
    ).start()
    yield server
    server.stop()


@pytest.fixture
def make_consumer(
    collector: Collector,
) -> Iterator[Callable[..., StreamConsumer]]:
    """Build consumers wired to the collector; every one is stopped at teardown.

    Keyword arguments named like a ``StreamTuning`` field go into the consumer's ``tuning``
    (on top of fast test defaults); the others go to ``StreamConsumer`` as they are.
    """
    made: list[StreamConsumer] = []
    knobs = {f.name for f in fields(StreamTuning)}

    def build(
        url: str,
        *,
        state: PositionStore | None = None,
        token: str = TOKEN,
        stream_id: str = STREAM_ID,
        start: bool = True,
        **kwargs: Any,
    ) -> StreamConsumer:
        tuning: dict[str, Any] = {
            "batch_window": 0.1,
            "backoff_base": 0.05,
            "backoff_cap": 0.5,
            "handler_retry_delay": 0.02,
        }
        tuning.update({k: kwargs.pop(k) for k in list(kwargs) if k in knobs})
        kwargs.setdefault("on_events", collector.on_events)
        kwargs.setdefault("on_status", collector.on_status)
        consumer = StreamConsumer(
            url,
            token,
            stream_id,
            state=state if state is not None else MemoryStore(),
            tuning=StreamTuning(**tuning),
            **kwargs,
        )
        made.append(consumer)
        if start:
            consumer.start()
        return consumer

    yield build
    for consumer in made:
        consumer.stop(timeout=5)


@pytest.fixture(autouse=True)
def log_lines() -> Iterator[list[str]]:
    """Every log line written during the test (DEBUG and up); none may contain the token."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)
    leaked = [line for line in lines if TOKEN in line]
    assert not leaked, f"token leaked into logs: {leaked[:3]}"


# --- a scripted SSE server ------------------------------------------------------------------


@dataclass
class Reply:
    """What the scripted server sends on one connection."""

    status: int = 200
    body: str = ""
    hold: bool = False  # keep the connection open (until the server stops) after the body


@dataclass
class ScriptedSSE:
    """Answers the n-th stream request with ``script(n)``; records request headers and paths."""

    script: Callable[[int], Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    def start(self) -> ScriptedSSE:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with owner.cond:
                    n = len(owner.requests)
                    owner.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                    owner.cond.notify_all()
                reply = owner.script(n)
                data = reply.body.encode("utf-8")
                self.close_connection = True
                content_type = "text/event-stream" if reply.status == 200 else "application/json"
                head = (
                    f"HTTP/1.1 {reply.status} X\r\nContent-Type: {content_type}; charset=utf-8\r\n"
                    + (
                        "Connection: close\r\n\r\n"
                        if reply.status == 200
                        else f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
                    )
                )
                try:
                    self.wfile.write(head.encode("latin-1") + data)
                    self.wfile.flush()
                    if reply.hold:
                        owner.released.wait(30)
                except OSError:
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.requests)} stream requests"
                self.cond.wait(left)

    def stop(self) -> None:
        self.released.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedSSE]]:
    """``scripted(*replies)``: the n-th connection gets ``replies[n]`` (the last one repeats);
    a reply is ``(status, body)`` or ``(status, body, hold_open)``."""
    servers: list[ScriptedSSE] = []

    def build(*replies: tuple[Any, ...]) -> ScriptedSSE:
        script = [Reply(*r) for r in replies]
        server = ScriptedSSE(lambda n: script[min(n, len(script) - 1)]).start()
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.stop()


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens (a port bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
