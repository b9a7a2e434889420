"""Stream events are hints: over real sockets, the controller re-reads what an event names
through the stream's own filters and never deploys an indicator the filters exclude.

The live stream also sends objects outside its filters: referenced dependencies, and updates
of an indicator whose container membership changed. Before the engine re-read hinted ids,
such an event's payload was mapped and deployed, and the next full run deleted it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.controller import Controller
from reconciler.opencti.stream import StreamEvent
from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine
from tests.e2e.support import settings_for

LABEL = "to-defender"
STREAM_FILTER = {
    "mode": "and",
    "filters": [{"key": ["objectLabel"], "values": [label_id(LABEL)], "operator": "eq"}],
    "filterGroups": [],
}


def event(kind: str, record: dict[str, Any], position: str, **envelope: Any) -> StreamEvent:
    data = OpenCTIEmulator.stix_object(record)
    return StreamEvent(position, kind, data, {"data": data, **envelope})


@pytest.fixture
def world() -> Iterator[tuple[DefenderEmulator, OpenCTIEmulator]]:
    with DefenderEmulator() as defender, OpenCTIEmulator(stream_filters=STREAM_FILTER) as opencti:
        yield defender, opencti


def writes(defender: DefenderEmulator) -> int:
    counts = defender.counts()
    return sum(counts.get(k, 0) for k in ("import", "batch_delete", "submit", "delete"))


def test_events_outside_the_stream_filters_write_nothing(world: Any) -> None:
    defender, opencti = world
    inside = opencti.create_indicator(
        pattern="[domain-name:value = 'inside.badhost.net']", score=90, labels=[LABEL]
    )
    settings = settings_for(defender, opencti)
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        assert controller.full_reconcile("startup") is True
        assert [r["indicatorValue"] for r in defender.indicators()] == ["inside.badhost.net"]
        before = writes(defender)

        # A dependency the server pushes with the stream (not matching its filters) ...
        dependency = opencti.create_indicator(
            pattern="[domain-name:value = 'dependency.badhost.net']", score=95
        )
        controller.handle_events(
            [event("create", dependency, "10-0", origin={"referer": "dependencies"})]
        )
        # ... and an update of an out-of-scope indicator (it joined a report, say).
        member = opencti.create_indicator(pattern="[ipv4-addr:value = '198.51.100.7']", score=80)
        member = opencti.update_indicator(member["id"], score=85)
        controller.handle_events([event("update", member, "11-0")])

        assert writes(defender) == before, "an event outside the filters wrote to Defender"
        assert [r["indicatorValue"] for r in defender.indicators()] == ["inside.badhost.net"]

        # Control: the same kind of event for an indicator the filters select does deploy,
        # and a label removed in OpenCTI (the indicator left the stream) removes it.
        opencti.update_indicator(member["id"], labels=[LABEL])
        controller.handle_events([event("update", member, "12-0")])
        assert sorted(r["indicatorValue"] for r in defender.indicators()) == [
            "198.51.100.7",
            "inside.badhost.net",
        ]
        opencti.update_indicator(inside["id"], labels=[])
        controller.handle_events([event("update", inside, "13-0")])
        assert [r["indicatorValue"] for r in defender.indicators()] == ["198.51.100.7"]


def test_a_merge_event_rereads_the_absorbed_indicators(world: Any) -> None:
    """A merge names its target and the absorbed sources; a source that no longer exists is
    handled like a deletion, the target like any update."""
    defender, opencti = world
    target = opencti.create_indicator(
        pattern="[domain-name:value = 'target.badhost.net']", score=90, labels=[LABEL]
    )
    source = opencti.create_indicator(
        pattern="[domain-name:value = 'absorbed.badhost.net']", score=90, labels=[LABEL]
    )
    settings = settings_for(defender, opencti)
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        assert controller.full_reconcile("startup") is True
        assert len(defender.indicators()) == 2
        source_stix = OpenCTIEmulator.stix_object(source)
        opencti.delete_indicator(source["id"])
        controller.handle_events(
            [event("merge", target, "20-0", context={"sources": [source_stix]})]
        )
        assert [r["indicatorValue"] for r in defender.indicators()] == ["target.badhost.net"]
