"""Alerts to hits (table-driven over evidence kinds) and the sightings pass's checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.clock import FakeClock
from reconciler.errors import SourceError
from reconciler.model import IndicatorKey, IndicatorType
from reconciler.sightings import (
    Checkpoint,
    FileCheckpoint,
    Hit,
    MemoryCheckpoint,
    SightingsJob,
    SinkOutcome,
    evidence_keys,
    match_hits,
    read_alert,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SHA256 = "A" * 64


def alert(ident: str, *evidence: dict[str, Any], at: datetime = T0) -> dict[str, Any]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": ident,
        "title": "A custom indicator was matched",
        "alertWebUrl": f"https://security.microsoft.com/alerts/{ident}",
        "createdDateTime": stamp,
        "lastUpdateDateTime": stamp,
        "detectionSource": "customTi",
        "evidence": [
            *evidence,
            {"@odata.type": "#microsoft.graph.security.deviceEvidence", "deviceDnsName": "pc-1"},
        ],
    }


@pytest.mark.parametrize(
    ("evidence", "keys"),
    [
        (
            {
                "@odata.type": "#microsoft.graph.security.fileEvidence",
                "fileDetails": {"sha256": SHA256, "sha1": None},
            },
            {IndicatorKey(IndicatorType.FILE_SHA256, SHA256.lower())},
        ),
        (
            {
                "@odata.type": "#microsoft.graph.security.fileHashEvidence",
                "algorithm": "md5",
                "value": "B" * 32,
            },
            {IndicatorKey(IndicatorType.FILE_MD5, "b" * 32)},
        ),
        (
            {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.9"},
            {IndicatorKey(IndicatorType.IP_ADDRESS, "203.0.113.9")},
        ),
        (
            {
                "@odata.type": "#microsoft.graph.security.urlEvidence",
                "url": "http://Evil.Example/x",
            },
            {
                IndicatorKey(IndicatorType.URL, "http://Evil.Example/x"),
                IndicatorKey(IndicatorType.DOMAIN_NAME, "evil.example"),
            },
        ),
        ({"@odata.type": "#microsoft.graph.security.mailboxEvidence", "x": 1}, set()),
    ],
    ids=["file", "hash", "ip", "url", "other"],
)
def test_evidence_keys(evidence: dict[str, Any], keys: set[IndicatorKey]) -> None:
    assert {k for k in evidence_keys(evidence) if k.type is not IndicatorType.URL} == {
        k for k in keys if k.type is not IndicatorType.URL
    }
    assert any(k.type is IndicatorType.URL for k in evidence_keys(evidence)) == any(
        k.type is IndicatorType.URL for k in keys
    )


def test_an_alert_without_id_or_date_is_no_hit() -> None:
    assert read_alert({"title": "x"}) is None
    assert read_alert({"id": "a", "createdDateTime": "yesterday"}) is None


def test_match_counts_an_alert_once_per_indicator_and_ignores_values_not_ours() -> None:
    ip = {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.9"}
    url = {"@odata.type": "#microsoft.graph.security.urlEvidence", "url": "http://203.0.113.9/"}
    stranger = {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "198.51.100.1"}
    hits = [read_alert(alert("a1", ip, url)), read_alert(alert("a2", stranger))]
    owned = {IndicatorKey(IndicatorType.IP_ADDRESS, "203.0.113.9"): ("ind-1", "ind-2")}
    matched = match_hits([h for h in hits if h is not None], owned)
    assert {oid: [h.alert_id for h in v] for oid, v in matched.items()} == {
        "ind-1": ["a1"],
        "ind-2": ["a1"],
    }


class Alerts:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.windows: list[tuple[datetime, datetime]] = []

    def alerts(self, since: datetime, until: datetime) -> Iterable[dict[str, Any]]:
        self.windows.append((since, until))
        for a in self.items:
            updated = datetime.fromisoformat(a["lastUpdateDateTime"].replace("Z", "+00:00"))
            if since <= updated < until:
                yield a


class Sink:
    """Counts each alert once per indicator, like the OpenCTI sink (linked alert ids)."""

    def __init__(self) -> None:
        self.counted: dict[str, set[str]] = {}
        self.fail = False

    def record(self, hits: Mapping[str, Sequence[Hit]]) -> SinkOutcome:
        if self.fail:
            raise SourceError("OpenCTI is down")
        out = SinkOutcome(calls=1)
        for oid, items in hits.items():
            seen = self.counted.setdefault(oid, set())
            new = {h.alert_id for h in items} - seen
            seen |= new
            out.added[oid] = len(new)
        return out


IP_EVIDENCE = {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.9"}
OWNED = {IndicatorKey(IndicatorType.IP_ADDRESS, "203.0.113.9"): ("ind-1",)}


def job(
    alerts: Alerts, sink: Sink, clock: FakeClock, checkpoint: Any, owned: Any = OWNED
) -> SightingsJob:
    return SightingsJob(
        alerts=alerts, sink=sink, checkpoint=checkpoint, owned=lambda: owned, clock=clock
    )


def test_first_pass_looks_back_then_windows_follow_the_checkpoint_with_overlap() -> None:
    clock, alerts, sink, cp = FakeClock(T0), Alerts(), Sink(), MemoryCheckpoint()
    alerts.items = [alert("a1", IP_EVIDENCE, at=T0 - timedelta(hours=2))]
    report = job(alerts, sink, clock, cp).run()
    assert (report.alerts, report.hits, report.counted, report.sightings) == (1, 1, 1, 1)
    assert alerts.windows[0] == (T0 - timedelta(days=1), T0)
    clock.advance(300)
    job(alerts, sink, clock, cp).run()
    assert alerts.windows[1] == (T0 - timedelta(minutes=10), T0 + timedelta(seconds=300))


def test_an_alert_in_the_overlap_is_not_counted_twice_even_by_a_sink_without_memory() -> None:
    clock, alerts, cp = FakeClock(T0), Alerts(), MemoryCheckpoint()
    alerts.items = [alert("a1", IP_EVIDENCE, at=T0 - timedelta(minutes=1))]
    first = job(alerts, Sink(), clock, cp).run()
    clock.advance(60)
    second = job(alerts, Sink(), clock, cp).run()  # a fresh sink: only the checkpoint helps
    assert first.counted == 1 and second.counted == 0 and second.alerts == 1


def test_a_failed_pass_keeps_the_checkpoint_and_the_next_reads_the_window_again() -> None:
    clock, alerts, sink, cp = FakeClock(T0), Alerts(), Sink(), MemoryCheckpoint()
    alerts.items = [alert("a1", IP_EVIDENCE, at=T0 - timedelta(hours=1))]
    sink.fail = True
    assert job(alerts, sink, clock, cp).run().error
    assert cp.load() is None
    sink.fail = False
    assert job(alerts, sink, clock, cp).run().counted == 1


def test_nothing_before_the_first_full_reconcile() -> None:
    alerts = Alerts()
    report = job(alerts, Sink(), FakeClock(T0), MemoryCheckpoint(), owned=None).run()
    assert report.skipped and alerts.windows == []


def test_file_checkpoint_round_trip_and_a_damaged_file(tmp_path: Path) -> None:
    store = FileCheckpoint(tmp_path / "state.sightings.json")
    assert store.load() is None
    store.save(Checkpoint(T0, frozenset({"a1"})))
    assert FileCheckpoint(tmp_path / "state.sightings.json").load() == Checkpoint(
        T0, frozenset({"a1"})
    )
    (tmp_path / "state.sightings.json").write_text("{not json", encoding="utf-8")
    assert store.load() is None
