"""The same OpenCTI indicators read both ways the product reads them (the pycti listing over
GraphQL, and the live stream's STIX events) map to identical Defender specs and skips."""

from __future__ import annotations

import threading

from reconciler.mapping import (
    MappingPolicy,
    OpenCTIIndicator,
    indicator_from_graphql,
    indicator_from_stix,
    map_indicator,
)
from reconciler.opencti.source import OpenCTISource
from reconciler.opencti.state import MemoryStore
from reconciler.opencti.stream import StreamConsumer, StreamEvent, StreamTuning
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import TODAY


def test_listing_rows_and_stream_events_map_identically() -> None:
    policy = MappingPolicy(rbac_group_names=("SOC",), educate_url="https://intranet.example/b")
    with OpenCTIEmulator() as opencti:
        opencti.load(generate_indicators(400, seed=21, now=TODAY))
        source = OpenCTISource(opencti.url, opencti.token, opencti.stream_id, page_size=150)
        listed = {row["id"]: row for row in source.list_indicators()}

        streamed: dict[str, StreamEvent] = {}
        done = threading.Event()
        lock = threading.Lock()

        def on_events(events: list[StreamEvent]) -> None:
            with lock:
                for event in events:
                    if event.event == "create":
                        ident = event.data.get("extensions", {})
                        octi = next(iter(ident.values()), {}) if isinstance(ident, dict) else {}
                        streamed[str(octi.get("id"))] = event
                if len(streamed) >= len(listed):
                    done.set()

        # No stored position: the first connection replays the current set as creates.
        consumer = StreamConsumer(
            opencti.url,
            opencti.token,
            opencti.stream_id,
            on_events=on_events,
            state=MemoryStore(None),
            tuning=StreamTuning(batch_window=0.05),
        )
        consumer.start()
        try:
            assert done.wait(30), f"{len(streamed)} of {len(listed)} streamed"
        finally:
            consumer.stop()

    assert set(streamed) == set(listed) and len(listed) > 200
    compared = 0
    for ident, row in listed.items():
        from_listing = indicator_from_graphql(row)
        from_stream = indicator_from_stix(streamed[ident].data)
        assert isinstance(from_listing, OpenCTIIndicator), from_listing
        assert from_listing == from_stream, ident
        a = map_indicator(from_listing, policy, TODAY)
        b = map_indicator(from_stream, policy, TODAY)
        assert a == b, ident
        compared += len(a.desired)
    assert compared > 150
