"""Fixtures for the fake OpenCTI: emulators, and pycti's real stream helper tamed for tests.

pycti's ``OpenCTIConnectorHelper`` installs a process-wide ``sys.excepthook`` that SIGTERMs the
process whenever its stream threads stop (reference §2.6). ``stream_helpers`` neutralises it
after each construction and restores the original hook once every pycti thread is gone.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from reconciler.sandbox.opencti import OpenCTIEmulator

TOKEN = "fake-opencti-token"
WAIT = 10.0  # seconds; generous upper bound, tests wake on events long before


class Received:
    """Stream messages handed to the pycti callback, with a condition to wait on."""

    def __init__(self, hook: Callable[[list[Any]], None] | None = None) -> None:
        self.messages: list[Any] = []
        self._cond = threading.Condition()
        self._hook = hook

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()
        if self._hook is not None:
            self._hook(self.messages)

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = WAIT) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.messages), timeout):
                seen = [(m.event, m.id) for m in self.messages]
                raise AssertionError(f"condition not met in {timeout}s; received {seen}")

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        with self._cond:
            return [(m.event, json.loads(m.data)) for m in self.messages]


class StreamHelpers:
    """Builds real pycti stream helpers against an emulator and stops them cleanly."""

    def __init__(self) -> None:
        self.running: list[tuple[Any, Any]] = []

    def listen(
        self,
        emu: OpenCTIEmulator,
        *,
        listen_delete: bool = True,
        connector_id: str | None = None,
        hook: Callable[[list[Any]], None] | None = None,
    ) -> tuple[Any, Received]:
        """A started real pycti stream consumer; ``hook`` runs after each received message."""
        from pycti import OpenCTIConnectorHelper

        config = {
            "opencti": {"url": emu.url, "token": emu.token, "json_logging": False},
            "connector": {
                "id": connector_id or str(uuid.uuid4()),
                "type": "STREAM",
                "name": "reconciler-test",
                "scope": "indicator",
                "log_level": "error",
                "live_stream_id": emu.stream_id,
                "live_stream_listen_delete": listen_delete,
                "live_stream_no_dependencies": True,
            },
        }
        helper = OpenCTIConnectorHelper(config)
        sys.excepthook = lambda *args: None  # pycti's hook would SIGTERM us on stop
        received = Received(hook)
        thread = helper.listen_stream(received)
        self.running.append((helper, thread))
        return helper, received

    def stop_all(self) -> None:
        for helper, thread in self.running:
            thread.stop()  # noticed at the next message (heartbeats come every 0.2 s)
            thread.join(timeout=WAIT)
            helper.ping.stop()
        self.running.clear()


@pytest.fixture(scope="module")
def _pycti_hook_guard() -> Iterator[None]:
    original = sys.excepthook
    yield
    # StreamAlive watchdogs sleep 5 s between checks, then call sys.excepthook: wait for them.
    # A ListenStream that died (server gone) leaves its watchdog running: stop those too.
    for thread in threading.enumerate():
        if type(thread).__name__ in ("StreamAlive", "ListenStream", "PingAlive"):
            thread.stop()  # type: ignore[attr-defined]
            thread.join(timeout=15)
    sys.excepthook = original


@pytest.fixture
def stream_helpers(_pycti_hook_guard: None) -> Iterator[StreamHelpers]:
    helpers = StreamHelpers()
    yield helpers
    helpers.stop_all()


@pytest.fixture
def emulator() -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN, heartbeat_interval=0.2, retry_ms=100) as emu:
        yield emu


def first_run_recovery(emu: OpenCTIEmulator) -> list[dict[str, Any]]:
    """Messages of a connection from the very beginning with ``recover`` far ahead, up to the
    first heartbeat (which follows the recovery): ``{id, event, data}`` with ``data`` parsed."""
    return stream_messages(emu, {"recover": "2100-01-01T00:00:00.000Z"})


def stream_messages(
    emu: OpenCTIEmulator, extra_headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every message a stream connection from ``0-0`` delivers up to the first heartbeat:
    ``{id, event, data}`` with ``data`` parsed. Read in large chunks: line by line, a
    megabyte of events costs the client seconds."""
    headers = {
        "authorization": f"Bearer {emu.token}",
        "Last-Event-ID": "0-0",
        **(extra_headers or {}),
    }
    chunks: list[bytes] = []
    url = f"{emu.url}/stream/{emu.stream_id}"
    with requests.get(url, headers=headers, stream=True, timeout=WAIT) as response:
        assert response.status_code == 200
        tail = b""
        while b"\nevent: heartbeat\n" not in tail:
            chunk = response.raw.read1(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            tail = tail[-32:] + chunk
    messages = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if fields.get("event") == "heartbeat":
            break
        if "id" in fields and "data" in fields:
            fields["data"] = json.loads(fields["data"])
            messages.append(fields)
    return messages
