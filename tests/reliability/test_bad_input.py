"""Bad input through the whole path: hypothesis-made stream events and listing rows.

Events (STIX indicators with fuzzed, missing, wrongly typed, huge or hostile fields, and events
whose data is no object at all) go to ``Controller.handle_events``; listing rows (GraphQL nodes
likewise fuzzed) go through ``Controller.full_reconcile`` via a source that serves them next to
a valid dataset. Both run against the real Defender emulator, which validates every body and
parses every OData ``$filter``. The controller must never raise, never log an error, never
count a failed item, and Defender must never answer a request with a 4xx/5xx: no invalid body
and no hostile value reaching a ``$filter`` unescaped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger

from reconciler.clock import FakeClock
from reconciler.controller import Controller
from reconciler.metrics import Metrics
from reconciler.model import DefenderIndicator
from reconciler.opencti.source import Page
from reconciler.opencti.stream import STIX_EXT_OCTI, SSEParser, StreamEvent
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine
from tests.reliability.support import TODAY, settings_for

BOUNDED = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

HOSTILE = [
    "' or 1 eq 1",
    "x' or indicatorValue ne 'y",
    "') or (application eq 'Portal",
    "evil.com' or '1' eq '1",
    "a\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1",
    "line\nbreak",
    "tab\there",
    "nul\x00byte",
    "\u202eexe.txt",
    "b\u00fccher.example.de",
    "xn--bcher-kva.de",
    "\U0001f4a5.badhost.net",
    "${jndi:ldap://198.51.100.7/a}",
    "<script>alert(1)</script>",
    "%27%20or%201%20eq%201",
    "\\' or 1 eq 1",
    "'or'1'eq'1",
    "x')or(application/eq/'Portal",
    "q='",
    "''''",
    "it's'",
    "a\\'b",
    "..\\..\\windows",
    "",
    " ",
    "a" * 70_000,
    "sub." * 60 + "badhost.net",
    "10.0.0.1",
    "127.0.0.1",
    "::1",
    "http://[::1]:80/x",
    "http://user:pass@203.0.113.9/path?q=' or 1 eq 1",
    "0" * 64,
    "G" * 40,
]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=10,
)
texts = st.sampled_from(HOSTILE) | st.text(max_size=40)
hostile_or_junk = texts | json_values


def _observable_value(octi_type: str, path: str, value: str) -> dict[str, Any]:
    if octi_type == "StixFile":
        algorithm = "SHA-256" if "SHA-256" in path else "MD5"
        return {"type": octi_type, "hashes": {algorithm: value}}
    return {"type": octi_type, "value": value}


def _graphql_value(octi_type: str, path: str, value: str) -> dict[str, Any]:
    if octi_type == "StixFile":
        algorithm = "SHA-256" if "SHA-256" in path else "MD5"
        return {
            "type": octi_type,
            "value": None,
            "hashes": [{"algorithm": algorithm, "hash": value}],
        }
    return {"type": octi_type, "value": value, "hashes": None}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# Values that can be deployed, many carrying quotes, CRLF-like escapes, unicode or odd lengths.
labels_ = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).filter(
    lambda t: not t.startswith("-") and not t.endswith("-")
)
domains = st.builds(
    lambda a, b, tld: f"{a}.{b}.{tld}",
    labels_,
    labels_,
    st.sampled_from(["com", "net", "ru", "xyz", "de"]),
) | st.sampled_from(
    ["b\u00fccher-shop.de", "xn--bcher-kva.de", "\u0434\u043e\u043c\u0435\u043d.\u0440\u0444"]
)
url_paths = st.sampled_from(HOSTILE[:24]) | st.text(max_size=30)
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https", "ftp"]),
    domains,
    url_paths,
)
ipv4s = st.builds(
    lambda a, b, c, d: f"{a}.{b}.{c}.{d}",
    st.sampled_from([45, 91, 185, 203, 10, 127, 0, 255, 300]),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 256),
)
hexes = st.integers(0, 2**256 - 1).map(lambda n: f"{n:064x}")
OBSERVABLES: dict[str, tuple[str, str, st.SearchStrategy[str]]] = {
    "domain": ("domain-name:value", "Domain-Name", domains),
    "url": ("url:value", "Url", urls),
    "ipv4": ("ipv4-addr:value", "IPv4-Addr", ipv4s),
    "sha256": ("file:hashes.'SHA-256'", "StixFile", hexes),
    "md5": ("file:hashes.MD5", "StixFile", hexes.map(lambda h: h[:32])),
}


@st.composite
def observable(draw: st.DrawFn) -> tuple[str, str, str]:
    """(STIX path, OpenCTI type, value): a deployable-looking value, or a hostile one."""
    path, octi_type, values = OBSERVABLES[draw(st.sampled_from(sorted(OBSERVABLES)))]
    value = draw(values | st.sampled_from(HOSTILE) if draw(st.integers(0, 3)) == 0 else values)
    return path, octi_type, value


@st.composite
def patterns(draw: st.DrawFn, path: str, value: str) -> Any:
    shape = draw(st.integers(0, 9))
    if shape <= 5:
        return f"[{path} = '{_escape(value)}']"
    if shape == 6:  # unescaped quotes: a broken or different pattern
        return f"[{path} = '{value}']"
    if shape == 7:
        other_path, _, other = draw(observable())
        return f"[{path} = '{_escape(value)}' OR {other_path} = '{_escape(other)}']"
    return draw(texts | json_values)


dates = (
    st.sampled_from(["2026-01-01T00:00:00.000Z", "not a date", "9999-12-31T23:59:59Z", "0"])
    | st.datetimes().map(lambda d: d.isoformat())
    | json_values
)


def _days(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(
        lambda days: (TODAY + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    )


good_dates = _days(-20, 0)
until_dates = _days(-3, 60)  # mostly still valid: most objects should deploy
scores = st.integers(-1000, 1000) | st.sampled_from([None, "90", "high", 1e308, True]) | json_values
junk = hostile_or_junk | st.sampled_from(["a" * 100_000, None, [], {}, 0, -1, 2**70])


def _mutate(draw: st.DrawFn, obj: dict[str, Any], keys: list[str]) -> None:
    """Drop or replace with junk up to three fields (recursing into the extension)."""
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(junk)


@st.composite
def stix_objects(draw: st.DrawFn) -> Any:
    """A STIX indicator as the stream sends it, with some fields dropped or mistyped."""
    path, octi_type, value = draw(observable())
    ext: dict[str, Any] = {
        "extension_type": "property-extension",
        "id": str(draw(st.uuids())),
        "type": "Indicator",
        "created_at": draw(good_dates),
        "updated_at": draw(good_dates),
        "score": draw(st.integers(0, 100)),
        "detection": True,
        "main_observable_type": octi_type,
        "observable_values": [_observable_value(octi_type, path, value)],
    }
    obj: dict[str, Any] = {
        "id": f"indicator--{draw(st.uuids())}",
        "type": "indicator",
        "spec_version": "2.1",
        "name": draw(st.just(value) | texts),
        "description": draw(texts),
        "pattern": draw(patterns(path, value)),
        "pattern_type": "stix",
        "valid_from": draw(good_dates),
        "valid_until": draw(until_dates),
        "revoked": False,
        "labels": draw(st.lists(texts, max_size=3)),
        "extensions": {STIX_EXT_OCTI: ext},
    }
    _mutate(draw, obj, sorted(obj))
    _mutate(draw, ext, sorted(ext))
    return obj


events = st.builds(
    StreamEvent,
    id=st.just("1700000000000-0") | st.text(max_size=12),
    event=st.sampled_from(["create", "update", "delete", "merge"]) | st.text(max_size=8),
    data=stix_objects() | stix_objects() | stix_objects() | json_values,
    envelope=st.just({}),
)


@st.composite
def graphql_rows(draw: st.DrawFn) -> Any:
    """A listing node of the lean GraphQL selection, with some fields dropped or mistyped."""
    path, octi_type, value = draw(observable())
    row: dict[str, Any] = {
        "id": str(draw(st.uuids())),
        "standard_id": f"indicator--{draw(st.uuids())}",
        "entity_type": "Indicator",
        "created_at": draw(good_dates),
        "updated_at": draw(good_dates),
        "revoked": False,
        "confidence": 50,
        "name": draw(st.just(value) | texts),
        "description": draw(texts),
        "pattern_type": "stix",
        "pattern": draw(patterns(path, value)),
        "valid_from": draw(good_dates),
        "valid_until": draw(until_dates),
        "x_opencti_score": draw(st.integers(0, 100)),
        "x_opencti_detection": True,
        "x_opencti_main_observable_type": octi_type,
        "x_opencti_observable_values": [_graphql_value(octi_type, path, value)],
        "objectLabel": [{"id": "l", "value": v} for v in draw(st.lists(texts, max_size=3))],
    }
    _mutate(draw, row, sorted(row))
    return row


class ServedRows:
    """A desired source serving a fixed valid dataset plus whatever the test puts in ``extra``."""

    def __init__(self, base: list[dict[str, Any]]) -> None:
        self.base = base
        self.extra: list[Any] = []

    def listing_filters(self) -> dict[str, Any]:
        return {}

    def iter_by_priority(self, listing: Any) -> Iterator[Page]:
        rows = [*self.base, *self.extra]
        yield Page(rows, len(rows))

    def iter_score_tie(self, listing: Any, score: Any) -> Iterator[Page]:
        raise AssertionError("the quota is never reached here")

    def read_ids(self, ids: Any, parse: Any, *, listing: Any = None) -> list[Any]:
        wanted = set(ids)
        rows = [*self.base, *self.extra]
        return [parse(r) for r in rows if isinstance(r, dict) and r.get("id") in wanted]


@dataclass
class World:
    defender: DefenderEmulator
    controller: Controller
    metrics: Metrics
    source: ServedRows
    errors: list[str]

    def check(self) -> None:
        bad = [(r.endpoint, r.status, r.path[:120]) for r in self.defender.requests if r.status]
        bad = [b for b in bad if b[1] >= 400]
        assert bad == [], f"Defender refused requests: {bad[:5]}"
        assert self.errors == [], self.errors[:3]
        failed = [
            (sample.labels, sample.value)
            for metric in self.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "reconciler_failed_items_total" and sample.value
        ]
        assert failed == [], failed


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    records = generate_indicators(60, seed=8, now=TODAY)
    base = [OpenCTIEmulator.graphql_node(r) for r in records]
    with DefenderEmulator(rate_limits=False) as defender, OpenCTIEmulator() as opencti:
        settings = settings_for(defender, opencti)
        metrics = Metrics()
        errors: list[str] = []
        sink = logger.add(lambda m: errors.append(str(m)), level="ERROR", format="{message}")
        try:
            # A fake clock: the client's own rate budgets (30 imports a minute) wait instantly.
            clock = FakeClock(datetime.now(UTC))
            with open_engine(settings, clock=clock, on_call=metrics.on_defender_call) as engine:
                source = ServedRows(base)
                engine.source = source
                controller = Controller(
                    controller_options(settings), engine=engine, metrics=metrics
                )
                assert controller.full_reconcile("startup") is True
                assert len(defender.indicators()) > 20
                yield World(defender, controller, metrics, source, errors)
        finally:
            with contextlib.suppress(ValueError):  # gone if a test reset the sinks
                logger.remove(sink)


@BOUNDED
@given(batch=st.lists(events, min_size=1, max_size=4))
def test_fuzzed_stream_events_never_crash_nor_send_invalid_requests(
    world: World, batch: list[StreamEvent]
) -> None:
    world.controller.handle_events(batch)
    world.check()


@BOUNDED
@given(rows=st.lists(graphql_rows(), min_size=1, max_size=5))
def test_fuzzed_listing_rows_are_skipped_never_crash_nor_send_invalid_requests(
    world: World, rows: list[Any]
) -> None:
    world.source.extra = rows
    try:
        assert world.controller.full_reconcile("schedule") is True
    finally:
        world.source.extra = []
    world.check()


@BOUNDED
@given(
    ids=st.lists(texts | json_values, min_size=1, max_size=3),
)
def test_delete_events_with_any_id_never_crash(world: World, ids: list[Any]) -> None:
    batch = [
        StreamEvent(
            f"17000000000{i}-0",
            "delete",
            {"type": "indicator", "extensions": {STIX_EXT_OCTI: {"id": ident}}},
            {},
        )
        for i, ident in enumerate(ids)
    ]
    world.controller.handle_events(batch)
    world.check()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(lines=st.lists(st.text(max_size=60) | st.sampled_from(["", "data: {", "id: 1-0"])))
def test_sse_parser_takes_any_lines(lines: list[str]) -> None:
    parser = SSEParser()
    for line in lines:
        message = parser.feed(line)
        assert message is None or isinstance(message.data, str)


def _hostile_records() -> list[dict[str, Any]]:
    """Dataset records (loaded into the fake OpenCTI, read back through pycti) whose
    patterns, names, descriptions and labels carry the hostile strings."""
    records = generate_indicators(len(HOSTILE), seed=12, now=TODAY)
    for record, text in zip(records, HOSTILE, strict=True):
        url = f"https://hostile.badhost.net/{text}"
        record["pattern"] = f"[url:value = '{_escape(url)}']"
        record["main_observable_type"] = "Url"
        record["observable_values"] = [{"type": "Url", "value": url}]
        record["name"] = text
        record["description"] = text
        record["labels"] = [text[:50], "\r\n", "' or 1 eq 1"]
        record["revoked"] = False
    return records


def test_hostile_records_through_the_real_listing_deploy_or_skip_cleanly() -> None:
    with DefenderEmulator(rate_limits=False) as defender, OpenCTIEmulator() as opencti:
        opencti.load(_hostile_records())
        settings = settings_for(defender, opencti)
        errors: list[str] = []
        sink = logger.add(lambda m: errors.append(str(m)), level="ERROR", format="{message}")
        try:
            with open_engine(settings, clock=FakeClock(datetime.now(UTC))) as engine:
                plan = engine.plan()
                result = engine.apply(plan)
                again = engine.plan()
                # Scoped reads put each value into an OData $filter: one key, one row back
                # (an unescaped quote would widen the filter or break it).
                rows = [DefenderIndicator.from_raw(r) for r in defender.indicators()]
                quoted = [i.key for i in rows if "'" in i.key.value]
                assert len(quoted) >= 3, quoted
                for key in quoted:
                    found = engine.read_actual_for([key])
                    assert [i.key for i in found.owned] == [key]
                    assert found.non_owned_count == 0
        finally:
            logger.remove(sink)
    assert errors == [] and result.failures == []
    assert [r.status for r in defender.requests if r.status >= 400] == []
    assert again.is_empty, again.summary
    deployed = {r["indicatorValue"] for r in defender.indicators()}
    assert "https://hostile.badhost.net/'or'1'eq'1" in deployed
    assert all("\r" not in v and "\n" not in v for v in deployed)
