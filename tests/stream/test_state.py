"""Position stores: the JSON file and OpenCTI's connector state (through the fake's GraphQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.clock import FakeClock
from reconciler.errors import SourceError
from reconciler.opencti.state import FileStore, MemoryStore, OpenCTIConnectorStore
from reconciler.sandbox.opencti import OpenCTIEmulator


def test_file_store_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "stream.json"
    store = FileStore(path, clock=FakeClock())
    assert store.load() is None
    store.save("1700000000000-1")
    store.save("1700000000000-2")
    assert FileStore(path).load() == "1700000000000-2"
    doc = json.loads(path.read_text())
    assert doc == {"start_from": "1700000000000-2", "updated": "2026-01-01T00:00:00+00:00"}
    assert [p.name for p in path.parent.iterdir()] == ["stream.json"]  # no temp file left


@pytest.mark.parametrize(
    "content", ["{half", "[]", '{"start_from": 5}', '{"start_from": ""}'], ids=str
)
def test_file_store_damaged_file_means_start_afresh(tmp_path: Path, content: str) -> None:
    path = tmp_path / "stream.json"
    path.write_text(content)
    assert FileStore(path).load() is None


def test_file_store_write_failure_is_a_source_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SourceError, match="cannot write"):
        FileStore(blocker / "stream.json").save("1-0")


def test_memory_store_records_saves() -> None:
    store = MemoryStore("1-0")
    store.save("2-0")
    assert (store.load(), store.saved) == ("2-0", ["2-0"])


@pytest.fixture
def octi(token: str) -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=token) as emu:
        yield emu


def test_connector_store_registers_loads_and_pings_throttled(
    octi: OpenCTIEmulator, token: str
) -> None:
    clock = FakeClock()
    store = OpenCTIConnectorStore(octi.url, token, "conn-1", min_interval=10, clock=clock)
    assert octi.counts() == {}  # nothing happens before first use

    assert store.load() is None
    register = next(r for r in octi.requests if r["field"] == "registerConnector")
    assert register["variables"]["input"]["type"] == "STREAM"
    assert register["variables"]["input"]["id"] == "conn-1"

    store.save("1-0")  # the first save pings at once
    assert json.loads(octi.connector_states["conn-1"] or "{}") == {"start_from": "1-0"}
    store.save("2-0")  # within min_interval: kept back
    assert json.loads(octi.connector_states["conn-1"] or "{}")["start_from"] == "1-0"
    clock.advance(10)
    store.save("3-0")
    assert json.loads(octi.connector_states["conn-1"] or "{}")["start_from"] == "3-0"
    store.save("4-0")
    store.flush()  # shutdown sends what was kept back
    assert json.loads(octi.connector_states["conn-1"] or "{}")["start_from"] == "4-0"
    pings = octi.counts().get("pingConnector", 0)
    store.flush()  # nothing new: no ping
    assert octi.counts().get("pingConnector", 0) == pings

    assert OpenCTIConnectorStore(octi.url, token, "conn-1").load() == "4-0"
    assert "deleteConnector" not in octi.counts()


def test_connector_store_keeps_other_state_keys(octi: OpenCTIEmulator, token: str) -> None:
    # e.g. the state left by the pycti-based connector this service replaces
    octi.connector_states["old"] = json.dumps({"start_from": "7-0", "recover_until": "x"})
    store = OpenCTIConnectorStore(octi.url, token, "old")
    assert store.load() == "7-0"
    store.save("8-0")
    assert json.loads(octi.connector_states["old"] or "{}") == {
        "start_from": "8-0",
        "recover_until": "x",
    }


def test_connector_store_errors_are_source_errors_without_the_token(
    octi: OpenCTIEmulator, token: str, dead_url: str
) -> None:
    with pytest.raises(SourceError) as bad_token:
        OpenCTIConnectorStore(octi.url, "wrong-" + token, "c").load()
    with pytest.raises(SourceError) as unreachable:
        OpenCTIConnectorStore(dead_url, token, "c", request_timeout=2).save("1-0")
    for error in (bad_token.value, unreachable.value):
        assert token not in str(error)
        assert "OpenCTI connector state" in str(error)
