"""Wire-level behaviour against a scripted SSE server: what the fake OpenCTI never sends
(non-indicator objects, malformed JSON, id-less data), recovery on reconnect, ``retry:``,
backoff growth, and a failing position store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reconciler.clock import FakeClock
from reconciler.errors import SourceError
from reconciler.opencti.state import MemoryStore
from reconciler.opencti.stream import STIX_EXT_OCTI, StreamConsumer

MakeConsumer = Callable[..., StreamConsumer]


def future_id(offset_ms: int = 60_000, seq: int = 0) -> str:
    """A stream id after any recover date the consumer can compute now."""
    return f"{int(time.time() * 1000) + offset_ms}-{seq}"


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"id: {event_id}\n" if event_id else ""
    return (
        head + f"event: {event}\n" + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n"
    )


def indicator(internal_id: str) -> dict[str, Any]:
    return {
        "type": "indicator",
        "id": f"indicator--{internal_id}",
        "extensions": {STIX_EXT_OCTI: {"id": internal_id, "score": 80}},
    }


def query(request: dict[str, Any]) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request["path"]).query)


def test_only_indicators_with_ids_are_delivered_and_bad_json_is_skipped(
    scripted: Callable[..., Any], make_consumer: MakeConsumer, collector: Any
) -> None:
    body = (
        "retry: 100\n\n"
        + sse("connected", {"lastEventId": "0-0"})
        + ": keep-alive comment\n\n"
        + sse(
            "create", {"type": "create", "data": {"type": "identity", "id": "identity--1"}}, "100-0"
        )
        + sse("create", "{not json", "101-0")
        + sse("create", {"data": "not an object"}, "101-1")
        + sse("create", {"data": indicator("no-id")})  # no id: ignored, like pycti
        + sse("update", json.dumps({"data": indicator("int-1")}, indent=1), "102-0")  # multi-line
        + sse("heartbeat", '"2026-01-01T00:00:00.000Z"', "103-0")
    )
    server = scripted((200, body, True))
    store = MemoryStore()
    consumer = make_consumer(server.url, state=store)

    events = collector.wait_events(1)
    collector.wait(lambda: bool(store.saved) and store.saved[-1] == "103-0")

    assert [(e.id, e.event, e.opencti_id) for e in events] == [("102-0", "update", "int-1")]
    assert collector.count("error", kind="malformed") == 2
    assert collector.count("event", type="identity", indicator=False) == 1
    assert consumer.position == "103-0"
    first = server.requests[0]
    assert first["headers"]["last-event-id"] == "0-0"
    assert "recover" in query(first)  # first run asks for the current set


def test_reconnect_resumes_after_the_last_id_and_stops_recovering_once_caught_up(
    scripted: Callable[..., Any], make_consumer: MakeConsumer
) -> None:
    old, new = "5-0", future_id()
    server = scripted(
        (200, sse("heartbeat", '""', old)),  # closes: position still before the recover date
        (200, sse("heartbeat", '""', new)),  # closes: now past it
        (200, "", True),
    )
    make_consumer(server.url)
    server.wait_requests(3)
    assert [r["headers"]["last-event-id"] for r in server.requests[:3]] == ["0-0", old, new]
    recover = [query(r).get("recover") for r in server.requests[:3]]
    assert recover[0] == recover[1] is not None  # same recover date, as pycti does
    assert recover[2] is None


def test_stored_position_means_no_recovery(
    scripted: Callable[..., Any], make_consumer: MakeConsumer
) -> None:
    server = scripted((200, "", True))
    make_consumer(server.url, state=MemoryStore("42-7"))
    server.wait_requests(1)
    assert server.requests[0]["headers"]["last-event-id"] == "42-7"
    assert "recover" not in query(server.requests[0])


def test_server_retry_is_the_minimum_reconnect_delay(
    scripted: Callable[..., Any], make_consumer: MakeConsumer
) -> None:
    clock = FakeClock()
    server = scripted((200, "retry: 300\n\n" + sse("heartbeat", '""', future_id())))
    consumer = make_consumer(server.url, clock=clock, backoff_base=0.001)
    server.wait_requests(4)
    consumer.stop(timeout=5)
    assert len(clock.slept) >= 3
    assert all(delay >= 0.3 for delay in clock.slept)


def test_backoff_grows_with_jitter_up_to_the_cap(
    dead_url: str, make_consumer: MakeConsumer, collector: Any
) -> None:
    clock = FakeClock()
    consumer = make_consumer(dead_url, clock=clock, backoff_base=1.0, backoff_cap=8.0)
    collector.wait_status("error", n=10, kind="connection")
    consumer.stop(timeout=5)
    delays = clock.slept[:10]
    assert 1.0 <= delays[0] <= 2.0  # attempt 1: between half and all of 2 s
    assert all(0 < d <= 8.0 for d in clock.slept)
    assert all(d >= 4.0 for d in delays[3:])  # capped at 8 s, jitter keeps at least half
    assert len(set(delays)) > 1


def test_non_2xx_is_reported_and_retried(
    scripted: Callable[..., Any], make_consumer: MakeConsumer, collector: Any
) -> None:
    server = scripted((410, '{"status": 410}'), (500, "boom"), (200, "", True))
    consumer = make_consumer(server.url)
    collector.wait_status("connected")
    assert collector.count("error", kind="http", status=410) == 1
    assert collector.count("error", kind="http", status=500) == 1
    assert consumer.connected


class BrokenStore:
    def __init__(self) -> None:
        self.attempts = 0

    def load(self) -> str | None:
        return "9-0"

    def save(self, position: str) -> None:
        self.attempts += 1
        raise SourceError("disk full")

    def flush(self) -> None:
        raise SourceError("disk still full")


def test_a_failing_store_never_stops_the_stream(
    scripted: Callable[..., Any], make_consumer: MakeConsumer, collector: Any
) -> None:
    body = sse("create", {"data": indicator("a")}, "10-0") + sse("heartbeat", '""', "11-0")
    server = scripted((200, body, True))
    store = BrokenStore()
    consumer = make_consumer(server.url, state=store, save_interval=0.01)
    collector.wait_events(1)
    collector.wait_status("error", n=2, kind="state")
    consumer.stop(timeout=5)
    assert store.attempts >= 2
    assert consumer.position == "11-0"


def test_silent_stream_is_dropped_after_the_heartbeat_timeout(
    scripted: Callable[..., Any], make_consumer: MakeConsumer, collector: Any
) -> None:
    server = scripted((200, sse("heartbeat", '""', "20-0"), True))  # then silence
    make_consumer(server.url, heartbeat_timeout=0.3)
    server.wait_requests(2)
    assert collector.count("error", kind="connection", error="ReadTimeout") >= 1
    assert server.requests[1]["headers"]["last-event-id"] == "20-0"


def test_stop_from_inside_the_handler_does_not_deadlock(
    scripted: Callable[..., Any], make_consumer: MakeConsumer
) -> None:
    body = sse("create", {"data": indicator("a")}, "30-0") + sse("heartbeat", '""', "31-0")
    server = scripted((200, body, True))
    store = MemoryStore()
    done = threading.Event()
    holder: list[StreamConsumer] = []

    def on_events(batch: list[Any]) -> None:
        holder[0].stop(timeout=2)
        done.set()

    holder.append(make_consumer(server.url, state=store, on_events=on_events, start=False))
    holder[0].start()
    assert done.wait(5)
    holder[0].stop(timeout=5)  # idempotent: here it just joins the threads
    assert store.flushes >= 1
    assert store.saved[-1] == "31-0"  # the batch returned: its position is kept
    assert not holder[0].connected
