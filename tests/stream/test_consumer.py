"""The stream consumer against the fake OpenCTI over real sockets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.opencti.state import FileStore, MemoryStore, OpenCTIConnectorStore
from reconciler.opencti.stream import StreamConsumer, StreamEvent
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator

MakeConsumer = Callable[..., StreamConsumer]


def ipv4(n: int) -> str:
    return f"[ipv4-addr:value = '198.51.{n // 250}.{n % 250 + 1}']"


def stream_requests(emu: OpenCTIEmulator) -> list[dict[str, Any]]:
    return [r for r in list(emu.requests) if r["field"] == "stream"]


def test_create_update_delete_arrive_in_order(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    make_consumer(emu.url)
    collector.wait_status("heartbeat")
    record = emu.create_indicator(pattern=ipv4(1), score=40)
    emu.update_indicator(record["id"], score=90)
    emu.delete_indicator(record["id"])

    events = collector.wait_events(3)

    assert [e.event for e in events] == ["create", "update", "delete"]
    assert {e.opencti_id for e in events} == {record["id"]}
    assert all(e.is_indicator and isinstance(e, StreamEvent) for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    assert events[1].envelope["context"]["patch"]  # the whole envelope is kept


def test_first_run_sends_pycti_headers_and_recovers_current_set(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any, token: str
) -> None:
    emu.load(generate_indicators(20, seed=3))
    consumer = make_consumer(emu.url, no_dependencies=False)

    events = collector.wait_events(20)  # the recovery listing arrives as creates
    headers = stream_requests(emu)[0]["headers"]
    assert headers["authorization"] == f"Bearer {token}"
    assert headers["last-event-id"] == "0-0"
    assert headers["listen-delete"] == "true"
    assert headers["no-dependencies"] == "false"
    assert headers["with-inferences"] == "false"
    assert headers["accept"] == "text/event-stream"
    assert all(e.event == "create" for e in events)
    assert consumer.connected


def test_burst_of_1000_creates_is_micro_batched(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    make_consumer(emu.url, batch_window=1.0, batch_max=500)
    collector.wait_status("heartbeat")
    created = [emu.create_indicator(pattern=ipv4(n))["id"] for n in range(1000)]

    events = collector.wait_events(1000, timeout=20)

    assert len(collector.batches) <= 5
    assert max(len(b) for b in collector.batches) <= 500
    assert [e.opencti_id for e in events] == created


def test_single_event_is_delivered_within_the_batch_window(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    make_consumer(emu.url, batch_window=0.3)
    collector.wait_status("heartbeat")
    started = time.monotonic()
    emu.create_indicator(pattern=ipv4(7))

    collector.wait_events(1)

    elapsed = collector.delivered_at[0] - started
    assert 0.25 <= elapsed < 1.0, elapsed


def test_disconnect_resumes_from_last_event_id_without_loss(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    make_consumer(emu.url)
    collector.wait_status("heartbeat")
    first = emu.create_indicator(pattern=ipv4(1))
    collector.wait_events(1)

    emu.disconnect_streams()
    later = [emu.create_indicator(pattern=ipv4(n))["id"] for n in range(2, 6)]
    collector.wait_status("connected", n=2)
    events = collector.wait_events(5)

    assert [e.opencti_id for e in events] == [first["id"], *later]  # no loss, no duplicate
    resumed_from = stream_requests(emu)[1]["headers"]["last-event-id"]
    assert resumed_from != "0-0"
    assert tuple(map(int, resumed_from.split("-"))) >= tuple(map(int, events[0].id.split("-")))


def test_server_restart_on_same_port_consumer_stays_up_and_catches_up(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    consumer = make_consumer(emu.url)
    collector.wait_status("heartbeat")
    emu.create_indicator(pattern=ipv4(1))
    collector.wait_events(1)

    emu.stop()  # the stream server is killed ...
    collector.wait_status("error", n=2, kind="connection")  # ... and the consumer keeps trying
    assert not consumer.connected
    missed = [emu.create_indicator(pattern=ipv4(n))["id"] for n in range(2, 5)]
    emu.start()  # same object, same port, same event log

    events = collector.wait_events(4)
    assert [e.opencti_id for e in events[1:]] == missed
    collector.wait(lambda: consumer.connected)


def test_fresh_server_on_the_same_port_is_picked_up(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any, token: str
) -> None:
    make_consumer(emu.url)
    collector.wait_status("heartbeat")
    port = emu.port
    emu.stop()
    collector.wait_status("error", kind="connection")
    fresh = OpenCTIEmulator(
        port=port, token=token, stream_id=emu.stream_id, heartbeat_interval=0.2, retry_ms=50
    ).start()
    try:
        collector.wait_status("connected", n=2)
        record = fresh.create_indicator(pattern=ipv4(9))
        events = collector.wait_events(1)
        assert events[0].opencti_id == record["id"]
    finally:
        fresh.stop()


def test_position_is_persisted_and_a_new_consumer_does_not_replay(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "stream.json"
    first = make_consumer(emu.url, state=FileStore(path))
    collector.wait_status("heartbeat")
    old = [emu.create_indicator(pattern=ipv4(n))["id"] for n in range(3)]
    events = collector.wait_events(3)
    first.stop(timeout=5)
    saved = json.loads(path.read_text())["start_from"]
    assert id_tuple(saved) >= id_tuple(events[-1].id)

    new = emu.create_indicator(pattern=ipv4(50))["id"]  # while nothing listens
    seen: list[str] = []
    got = threading.Event()

    def on_events(batch: list[StreamEvent]) -> None:
        seen.extend(e.opencti_id or "" for e in batch)
        got.set()

    second = make_consumer(emu.url, state=FileStore(path), on_events=on_events)
    assert got.wait(10)
    before = collector.count("heartbeat")
    collector.wait(lambda: collector.count("heartbeat") >= before + 3)  # time for a replay
    assert seen == [new]
    assert set(seen).isdisjoint(old)
    assert stream_requests(emu)[-1]["headers"]["last-event-id"] == saved
    second.stop(timeout=5)


def id_tuple(position: str) -> tuple[int, int]:
    head, _, tail = position.partition("-")
    return int(head), int(tail)


def test_heartbeats_alone_advance_the_saved_position(
    make_consumer: MakeConsumer, collector: Any, token: str
) -> None:
    high_scores = {
        "mode": "and",
        "filters": [{"key": "x_opencti_score", "values": ["50"], "operator": "gte", "mode": "or"}],
        "filterGroups": [],
    }
    with OpenCTIEmulator(
        token=token, stream_id="high", stream_filters=high_scores, heartbeat_interval=0.1
    ) as emu:
        store = MemoryStore("1-0")
        make_consumer(emu.url, stream_id="high", state=store, save_interval=0.05)
        collector.wait_status("heartbeat")
        hidden = emu.create_indicator(pattern=ipv4(1), score=10)  # outside the stream: no event
        head = (int(datetime.fromisoformat(hidden["updated_at"]).timestamp() * 1000), 0)

        collector.wait(lambda: bool(store.saved) and id_tuple(store.saved[-1]) >= head)
        assert collector.events == []


def test_connector_store_position_survives_a_consumer_restart(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any, token: str
) -> None:
    store = OpenCTIConnectorStore(emu.url, token, "conn-stream-1", min_interval=60)
    consumer = make_consumer(emu.url, state=store)
    collector.wait_status("heartbeat")
    emu.create_indicator(pattern=ipv4(1))
    events = collector.wait_events(1)
    consumer.stop(timeout=5)  # flushes the throttled position with a last ping

    state = json.loads(emu.connector_states["conn-stream-1"] or "null")
    assert id_tuple(state["start_from"]) >= id_tuple(events[0].id)
    fresh = OpenCTIConnectorStore(emu.url, token, "conn-stream-1")
    assert fresh.load() == state["start_from"]
    assert "deleteConnector" not in emu.counts()


def test_handler_error_is_retried_and_does_not_kill_the_consumer(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    failures = iter([True])
    collector.fail = lambda batch: next(failures, False)
    make_consumer(emu.url)
    collector.wait_status("heartbeat")
    record = emu.create_indicator(pattern=ipv4(1))

    events = collector.wait_events(1)
    assert events[0].opencti_id == record["id"]
    assert collector.calls == 2
    assert collector.count("error", kind="handler") == 1

    emu.create_indicator(pattern=ipv4(2))
    assert len(collector.wait_events(2)) == 2


def test_handler_failing_every_time_drops_the_batch_and_moves_on(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    bad = emu.create_indicator(pattern=ipv4(1))["id"]
    collector.fail = lambda batch: any(e.opencti_id == bad for e in batch)
    store = MemoryStore()
    consumer = make_consumer(emu.url, state=store, handler_attempts=3)
    collector.wait_status("error", n=3, kind="handler")  # recovery delivers it, 3 attempts

    good = emu.create_indicator(pattern=ipv4(2))["id"]
    events = collector.wait_events(1)
    assert [e.opencti_id for e in events] == [good]
    assert collector.count("error", kind="handler") == 3
    collector.wait(
        lambda: (
            consumer.position is not None and id_tuple(consumer.position) >= id_tuple(events[0].id)
        )
    )


def test_stop_is_prompt_while_blocked_on_a_quiet_stream(
    make_consumer: MakeConsumer, collector: Any, token: str
) -> None:
    with OpenCTIEmulator(token=token, stream_id="quiet", heartbeat_interval=30) as quiet:
        consumer = make_consumer(quiet.url, stream_id="quiet")
        collector.wait_status("connected")
        started = time.monotonic()
        consumer.stop(timeout=5)
        assert time.monotonic() - started < 2
        assert not consumer.connected


def test_stop_is_prompt_while_backing_off(
    dead_url: str, make_consumer: MakeConsumer, collector: Any
) -> None:
    consumer = make_consumer(dead_url, backoff_base=30, backoff_cap=60)
    collector.wait_status("error", kind="connection")
    started = time.monotonic()
    consumer.stop(timeout=5)
    assert time.monotonic() - started < 2


def test_bad_token_is_reported_clearly_and_retried(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any, log_lines: list[str]
) -> None:
    consumer = make_consumer(emu.url, token="wrong-token", backoff_base=0.01, backoff_cap=0.05)
    collector.wait_status("error", n=3, kind="http", status=401)
    assert any("401" in line and "token" in line for line in log_lines)
    assert not consumer.connected


def test_unknown_stream_is_retried_until_it_exists(
    emu: OpenCTIEmulator, make_consumer: MakeConsumer, collector: Any
) -> None:
    make_consumer(emu.url, stream_id="nope", backoff_base=0.01, backoff_cap=0.05)
    collector.wait_status("error", n=2, kind="http", status=401)
    emu.stream_id = "nope"  # the stream gets created on the platform
    collector.wait_status("heartbeat")
