"""The same OpenCTI indicators read both ways (the pycti listing over GraphQL, and the live
stream's STIX events) map to identical Defender specs and skips.

The product maps only the listing (a stream event is a hint: the indicator is re-read), so
this guards the STIX reader kept for tools and tests. The difference by design: a STIX
object names its author and markings by reference only, the listing by name and ids, so those
fields are compared apart."""

from __future__ import annotations

import threading
from dataclasses import replace

from reconciler.mapping import (
    MappingPolicy,
    OpenCTIIndicator,
    Rule,
    RuleMatch,
    indicator_from_graphql,
    indicator_from_stix,
    map_indicator,
)
from reconciler.model import Action
from reconciler.opencti.source import OpenCTISource
from reconciler.opencti.state import MemoryStore
from reconciler.opencti.stream import StreamConsumer, StreamEvent, StreamTuning
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator, author_id
from tests.e2e.support import TODAY


def test_listing_rows_and_stream_events_map_identically() -> None:
    policy = MappingPolicy(rbac_group_names=("SOC",), educate_url="https://intranet.example/b")
    # Policy rules on what both renderings carry: marking definitions, marking and author ids.
    by_ids = MappingPolicy(
        rules=(
            Rule("red-files", RuleMatch(markings=("TLP:RED",), types=("StixFile",)), deploy=False),
            Rule("amber", RuleMatch(markings=("tlp:amber",)), action=Action.AUDIT),
            Rule("abuse-ch", RuleMatch(authors=("identity--" + author_id("abuse.ch"),))),
        )
    )
    rules_used: set[str] = set()
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
        assert isinstance(from_stream, OpenCTIIndicator), from_stream
        # A STIX object names its author and markings by id only (TLP markings are named from
        # their standard ids): the ids it has are among the listing's, the rest is equal.
        assert set(from_stream.author_ids) <= set(from_listing.author_ids), ident
        assert bool(from_stream.author_ids) == bool(from_listing.author_ids), ident
        assert set(from_stream.marking_ids) <= set(from_listing.marking_ids), ident
        by_id = {"author": None, "author_ids": (), "marking_ids": ()}
        assert replace(from_listing, **by_id) == replace(from_stream, **by_id), ident
        for each in (policy, by_ids):
            a = map_indicator(from_listing, each, TODAY)
            b = map_indicator(from_stream, each, TODAY)
            assert a == b, ident
        mapped = map_indicator(from_listing, by_ids, TODAY)
        rules_used.update({d.rule for d in mapped.desired} | {s.rule for s in mapped.skipped})
        compared += len(a.desired)
    assert compared > 150
    assert rules_used - {None} == {"red-files", "amber", "abuse-ch", "default"}
