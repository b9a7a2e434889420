"""The fake's live stream driven by pycti's real OpenCTIConnectorHelper (STREAM connector)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import STIX_EXT_OCTI, OpenCTIEmulator

from .conftest import TOKEN, StreamHelpers


def ext(data: dict[str, Any]) -> dict[str, Any]:
    return data["extensions"][STIX_EXT_OCTI]


def ip_pattern(value: str) -> str:
    return f"[ipv4-addr:value = '{value}']"


def live(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Events that are not first-run recovery creates."""
    return [(name, body) for name, body in events if body["origin"].get("referer") != "init"]


def test_first_run_replays_the_current_set_as_creates(
    emulator: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    records = generate_indicators(60, seed=5)
    emulator.load(records)

    _, received = stream_helpers.listen(emulator)
    received.wait_for(lambda msgs: len(msgs) >= 60)

    events = received.events()
    assert {name for name, _ in events} == {"create"}
    assert {ext(body["data"])["id"] for _, body in events} == {r["id"] for r in records}
    assert all(body["origin"] == {"referer": "init"} for _, body in events)
    assert all(body["version"] == "4" for _, body in events)
    first_stream_call = next(r for r in emulator.requests if r["field"] == "stream")
    assert first_stream_call["headers"]["last-event-id"] == "0-0"
    assert first_stream_call["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_create_update_delete_arrive_in_order_with_envelopes(
    emulator: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    _, received = stream_helpers.listen(emulator)
    # Wait until the connection is live (its first heartbeat moved the position).
    received_heartbeat_or_connected(emulator)

    created = emulator.create_indicator(pattern=ip_pattern("203.0.113.45"), score=50)
    emulator.update_indicator(created["id"], score=80)
    emulator.delete_indicator(created["id"])
    received.wait_for(lambda msgs: len(msgs) >= 3)

    events = received.events()
    assert [name for name, _ in events] == ["create", "update", "delete"]
    for name, body in events:
        assert body["type"] == name
        assert body["scope"] == "external"
        assert body["data"]["type"] == "indicator"
        assert ext(body["data"])["id"] == created["id"]
    create, update, delete = (body for _, body in events)
    assert ext(create["data"])["score"] == 50
    assert ext(create["data"])["observable_values"] == [
        {"type": "IPv4-Addr", "value": "203.0.113.45"}
    ]
    assert "context" not in create
    score_path = f"/extensions/{STIX_EXT_OCTI}/score"
    assert update["context"]["patch"] == [{"op": "replace", "path": score_path, "value": 80}]
    assert update["context"]["reverse_patch"] == [
        {"op": "replace", "path": score_path, "value": 50}
    ]
    assert ext(update["data"])["score"] == 80
    assert ext(delete["data"])["score"] == 80  # the last full object
    ids = [tuple(map(int, m.id.split("-"))) for m in received.messages]
    assert ids == sorted(ids) and len(set(ids)) == 3


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition on the fake (no event to wait on across pycti's threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def received_heartbeat_or_connected(emu: OpenCTIEmulator) -> None:
    """Block until the helper's stream request reached the fake."""
    wait_until(lambda: emu.open_streams() > 0)


def test_reconnect_resumes_from_last_event_id_without_loss(
    emulator: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    _, received = stream_helpers.listen(emulator)
    received_heartbeat_or_connected(emulator)
    first = [emulator.create_indicator(pattern=ip_pattern(f"198.51.100.{i}")) for i in range(5)]
    received.wait_for(lambda msgs: len(msgs) >= 5)

    emulator.disconnect_streams()
    # Emitted while the client is cut off: only a resume from Last-Event-ID can deliver them.
    for record in first[:3]:
        emulator.update_indicator(record["id"], score=90)
    later = [emulator.create_indicator(pattern=ip_pattern(f"192.0.2.{i}")) for i in range(4)]
    emulator.delete_indicator(later[0]["id"])

    emitted = {e["id"] for e in emulator.events()}
    assert len(emitted) == 5 + 3 + 4 + 1
    received.wait_for(lambda msgs: emitted <= {m.id for m in msgs})

    assert {m.id for m in received.messages} == emitted  # nothing lost, nothing invented
    streams = [r for r in emulator.requests if r["field"] == "stream"]
    assert len(streams) >= 2
    resumed_from = streams[1]["headers"]["last-event-id"]
    fifth = sorted(emitted, key=lambda i: tuple(map(int, i.split("-"))))[4]
    assert tuple(map(int, resumed_from.split("-"))) >= tuple(map(int, fifth.split("-")))


def test_visibility_translation_against_stream_filters(
    stream_helpers: StreamHelpers,
) -> None:
    score_gte_50 = {
        "mode": "and",
        "filters": [{"key": ["x_opencti_score"], "values": ["50"], "operator": "gte"}],
        "filterGroups": [],
    }
    with OpenCTIEmulator(
        token=TOKEN, stream_filters=score_gte_50, heartbeat_interval=0.2, retry_ms=100
    ) as emu:
        _, received = stream_helpers.listen(emu)
        received_heartbeat_or_connected(emu)
        a = emu.create_indicator(pattern=ip_pattern("203.0.113.1"), score=80)
        emu.update_indicator(a["id"], score=20)  # leaves the stream → delete
        emu.update_indicator(a["id"], score=30)  # still outside → nothing
        emu.update_indicator(a["id"], score=90)  # enters again → create
        b = emu.create_indicator(pattern=ip_pattern("203.0.113.2"), score=10)  # invisible
        emu.delete_indicator(b["id"])  # invisible
        marker = emu.create_indicator(pattern=ip_pattern("203.0.113.3"), score=99)
        received.wait_for(lambda msgs: any(marker["name"] in m.data for m in msgs))

        events = received.events()
        assert [(name, ext(body["data"])["id"]) for name, body in events] == [
            ("create", a["id"]),
            ("delete", a["id"]),
            ("create", a["id"]),
            ("create", marker["id"]),
        ]
        assert ext(events[1][1]["data"])["score"] == 20
        assert events[1][1]["type"] == "update"  # stored type; the SSE name is translated
        stream_helpers.stop_all()  # before the fake goes away, or pycti's reconnect fails


def test_listen_delete_false_suppresses_deletes(
    emulator: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    _, received = stream_helpers.listen(emulator, listen_delete=False)
    received_heartbeat_or_connected(emulator)
    a = emulator.create_indicator(pattern=ip_pattern("203.0.113.7"))
    emulator.delete_indicator(a["id"])
    marker = emulator.create_indicator(pattern=ip_pattern("203.0.113.8"))
    received.wait_for(lambda msgs: any(marker["id"] in m.data for m in msgs))
    assert [name for name, _ in received.events()] == ["create", "create"]
    stream_call = next(r for r in emulator.requests if r["field"] == "stream")
    assert stream_call["headers"]["listen-delete"] == "false"


def test_helper_registers_and_pings_state(
    emulator: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    helper, _ = stream_helpers.listen(emulator)
    wait_until(lambda: "pingConnector" in emulator.counts())  # PingAlive pings from its thread
    counts = emulator.counts()
    assert counts["about"] == 2
    assert counts["registerConnector"] == 1
    assert emulator.connector_states[helper.connector_id] == "null"  # first ping, no state yet


def open_stream(emu: OpenCTIEmulator, token: str, stream_id: str | None = None) -> Any:
    return requests.get(
        f"{emu.url}/stream/{stream_id or emu.stream_id}",
        headers={"authorization": f"Bearer {token}", "Last-Event-ID": "0-0"},
        stream=True,
        timeout=5,
    )


def test_bad_token_and_unknown_stream_answer_401(emulator: OpenCTIEmulator) -> None:
    assert open_stream(emulator, "wrong").status_code == 401
    assert open_stream(emulator, TOKEN, "other-stream").status_code == 401


def test_disabled_stream_answers_410(emulator: OpenCTIEmulator) -> None:
    emulator.stream_enabled = False
    assert open_stream(emulator, TOKEN).status_code == 410


def test_wire_format_retry_connected_then_heartbeat_with_id(emulator: OpenCTIEmulator) -> None:
    emulator.create_indicator(pattern=ip_pattern("203.0.113.9"))
    with open_stream(emulator, TOKEN) as response:
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        lines = response.iter_lines(decode_unicode=True)
        block: list[str] = []
        blocks: list[list[str]] = []
        for line in lines:
            if line:
                block.append(line)
                continue
            blocks.append(block)
            block = []
            if any(b and b[-2:-1] == ["event: heartbeat"] for b in blocks):
                break
    assert blocks[0][0] == "retry: 100"
    assert blocks[0][1] == "event: connected"
    assert not any(line.startswith("id:") for line in blocks[0])
    create = blocks[1]
    assert create[0].startswith("id: ") and create[1] == "event: create"
    heartbeat = blocks[2]
    assert heartbeat[0] == create[0]  # the position after the event
    assert heartbeat[1] == "event: heartbeat"


def test_restart_resumes_from_the_pinged_state_without_replay(
    emulator: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    emulator.load(generate_indicators(20, seed=8))
    helper, received = stream_helpers.listen(emulator)
    received.wait_for(lambda msgs: len(msgs) >= 20)  # first-run recovery
    a = emulator.create_indicator(pattern=ip_pattern("203.0.113.20"))
    received.wait_for(lambda msgs: any(a["id"] in m.data for m in msgs))
    helper.force_ping()  # what PingAlive does every 40 s: the platform stores the position
    connector_id = helper.connector_id
    stream_helpers.stop_all()

    emulator.update_indicator(a["id"], score=77)  # happens while the connector is down
    restarted, again = stream_helpers.listen(emulator, connector_id=connector_id)
    again.wait_for(lambda msgs: len(msgs) >= 1)
    b = emulator.create_indicator(pattern=ip_pattern("203.0.113.21"))
    again.wait_for(lambda msgs: any(b["id"] in m.data for m in msgs))

    assert [(name, ext(body["data"])["id"]) for name, body in again.events()] == [
        ("update", a["id"]),
        ("create", b["id"]),
    ]
    assert restarted.connector_id == connector_id


def test_cut_during_first_run_recovery_resumes_where_it_stopped(
    emulator: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    records = generate_indicators(10_000, seed=12)
    emulator.load(records)
    _, received = stream_helpers.listen(
        emulator,
        hook=lambda msgs: emulator.disconnect_streams() if len(msgs) == 1000 else None,
    )
    received.wait_for(lambda msgs: len(msgs) >= 10_000)

    streams = [r for r in emulator.requests if r["field"] == "stream"]
    assert len(streams) == 2
    ids = [m.id for m in received.messages]
    # The client resumes after the last message it parsed: the 1000th or a later buffered one.
    resumed_at = ids.index(streams[1]["headers"]["last-event-id"])
    assert 999 <= resumed_at < 9999, "the cut should interrupt the recovery"
    assert len(ids) == len(set(ids)) == 10_000  # resumed exactly: no replay, no gap
    assert {ext(json.loads(m.data)["data"])["id"] for m in received.messages} == {
        r["id"] for r in records
    }
