"""Level-triggered scoped runs: for the same OpenCTI state, a scoped run plans exactly what a
full run plans for the keys the hinted ids affect.

The engine is driven through its seams with in-memory fakes: an OpenCTI source that applies a
"stream filter" to both of its reads, and a Defender reader holding the tenant's rows.
Hypothesis generates the OpenCTI state, Defender's state (owned rows with drift and duplicates,
other applications' rows) and a batch of changes with the ids the stream would hint at,
including ids the filter excludes (dependencies, container membership updates) and ids of
unchanged indicators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.clock import FakeClock
from reconciler.engine import Engine
from reconciler.mapping import MappingPolicy, indicator_from_graphql, map_indicator
from reconciler.mapping.models import OpenCTIIndicator
from reconciler.model import IndicatorKey, Ownership, RawIndicator
from reconciler.opencti.source import Page
from reconciler.plan import PlanPolicy

T = TypeVar("T")
NOW = datetime(2026, 6, 1, tzinfo=UTC)
SCOPE_LABEL = "to-defender"
VALUES = [f"v{i}.badhost.net" for i in range(8)] + [f"203.0.113.{i}" for i in range(1, 5)]
POLICY = MappingPolicy()


def node(
    ident: str, value: str, score: int, labels: Iterable[str], revoked: bool, age: int
) -> dict[str, Any]:
    kind = "IPv4-Addr" if value[0].isdigit() else "Domain-Name"
    stix = "ipv4-addr" if kind == "IPv4-Addr" else "domain-name"
    stamp = (NOW - timedelta(days=age)).isoformat().replace("+00:00", "Z")
    return {
        "id": ident,
        "entity_type": "Indicator",
        "name": f"{ident} {value}",
        "pattern_type": "stix",
        "pattern": f"[{stix}:value = '{value}']",
        "x_opencti_score": score,
        "x_opencti_main_observable_type": kind,
        "revoked": revoked,
        "created_at": stamp,
        "updated_at": stamp,
        "objectLabel": [{"value": v} for v in labels],
    }


def in_scope(row: dict[str, Any]) -> bool:
    return any(label["value"] == SCOPE_LABEL for label in row["objectLabel"])


class FakeSource:
    """OpenCTI: every read applies the stream filter (label ``to-defender``)."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows
        self.id_reads: list[list[str]] = []

    def listing_filters(self) -> dict[str, Any]:
        return {"stream": SCOPE_LABEL}

    def iter_by_priority(self, listing: dict[str, Any]) -> Iterator[Page]:
        rows = sorted(
            (r for r in self.rows.values() if in_scope(r)),
            key=lambda r: -(r["x_opencti_score"] if r["x_opencti_score"] is not None else -1),
        )
        yield Page(rows, len(rows))

    def iter_score_tie(self, listing: dict[str, Any], score: int | None) -> Iterator[Page]:
        raise AssertionError("the quota is never reached in these tests")

    def read_ids(
        self, ids: Iterable[str], parse: Callable[[dict[str, Any]], T], *, listing: Any = None
    ) -> list[T]:
        wanted = sorted(set(ids))
        self.id_reads.append(wanted)
        return [parse(self.rows[i]) for i in wanted if i in self.rows and in_scope(self.rows[i])]


class FakeDefender:
    """Defender: the full listing both kinds of run read."""

    def __init__(self, rows: list[RawIndicator]) -> None:
        self.rows = rows

    def iter_indicators(self, odata_filter: str | None = None, **_: Any) -> Iterator[RawIndicator]:
        assert odata_filter is None
        yield from (dict(r) for r in self.rows)

    def list_indicators(self, odata_filter: str | None = None, **_: Any) -> list[RawIndicator]:
        return list(self.iter_indicators(odata_filter))

    def import_indicators(self, bodies: Any) -> Any:
        raise AssertionError("planning only")

    def batch_delete(self, ids: Any) -> Any:
        raise AssertionError("planning only")


def engine_for(source: FakeSource, defender: FakeDefender) -> Engine:
    return Engine(
        source=source,
        defender=defender,
        mapping_policy=POLICY,
        plan_policy=PlanPolicy(),
        ownership=Ownership(),
        clock=FakeClock(NOW),
    )


# -- strategies -----------------------------------------------------------------------------

records = st.lists(
    st.tuples(
        st.sampled_from(VALUES),
        st.integers(0, 100),
        st.booleans(),  # in scope
        st.integers(0, 12).map(lambda n: n == 0),  # revoked, rarely
        st.integers(0, 60),  # age in days (over 30 = expired)
    ),
    min_size=1,
    max_size=14,
)
defender_rows = st.lists(
    st.tuples(
        st.sampled_from(VALUES),
        st.sampled_from(["Block", "Audit", "Warn", "Alert"]),
        st.sampled_from(["High", "Low", "Medium"]),
        st.sampled_from(["opencti", "opencti", "SOC"]),
    ),
    max_size=12,
)
#: (what, record index, new value, new score): the change an analyst made in OpenCTI.
changes = st.lists(
    st.tuples(
        st.sampled_from(["score", "value", "scope", "revoke", "delete", "create", "hint-only"]),
        st.integers(0, 13),
        st.sampled_from(VALUES),
        st.integers(0, 100),
    ),
    min_size=1,
    max_size=6,
)


def build_opencti(spec: list[tuple[str, int, bool, bool, int]]) -> dict[str, dict[str, Any]]:
    rows = {}
    for n, (value, score, scoped, revoked, age) in enumerate(spec):
        labels = [SCOPE_LABEL] if scoped else ["other-feed"]
        rows[f"ind-{n}"] = node(f"ind-{n}", value, score, labels, revoked, age)
    return rows


def build_defender(spec: list[tuple[str, str, str, str]]) -> list[RawIndicator]:
    rows = []
    for n, (value, action, severity, app) in enumerate(spec):
        rows.append(
            {
                "id": str(1000 + n),
                "indicatorType": "IpAddress" if value[0].isdigit() else "DomainName",
                "indicatorValue": value,
                "action": action,
                "severity": severity,
                "title": f"old title {n}",
                "description": "old",
                "application": app,
                "generateAlert": True,
                # Some point at an OpenCTI indicator (out of scope, or gone): a full read looks
                # those up by id when nothing it read maps to their key.
                "externalId": f"ind-{n}",
            }
        )
    return rows


def mutate(rows: dict[str, dict[str, Any]], edits: list[tuple[str, int, str, int]]) -> set[str]:
    """Apply the edits; returns the ids the live stream would hint at."""
    hints: set[str] = set()
    for what, index, value, score in edits:
        ident = f"ind-{index}"
        row = rows.get(ident)
        if what == "create":
            ident = f"new-{len(rows)}"
            labels = [SCOPE_LABEL] if score % 2 else ["other-feed"]
            rows[ident] = node(ident, value, score, labels, False, 1)
        elif row is None:
            pass
        elif what == "score":
            rows[ident] = {**row, "x_opencti_score": score}
        elif what == "value":
            rows[ident] = node(ident, value, row["x_opencti_score"], [SCOPE_LABEL], False, 2)
        elif what == "scope":
            flipped = [] if in_scope(row) else [{"value": SCOPE_LABEL}]
            rows[ident] = {**row, "objectLabel": flipped}
        elif what == "revoke":
            rows[ident] = {**row, "revoked": True}
        elif what == "delete":
            del rows[ident]
        hints.add(ident)
    return hints


def keys_of(row: dict[str, Any] | None) -> frozenset[IndicatorKey]:
    if row is None or not in_scope(row):
        return frozenset()
    parsed = indicator_from_graphql(row)
    assert isinstance(parsed, OpenCTIIndicator)
    result = map_indicator(parsed, POLICY, NOW)
    return frozenset({d.key for d in result.desired} | {s.key for s in result.skipped if s.key})


def mapped(row: dict[str, Any] | None) -> object:
    if row is None or not in_scope(row):
        return None
    parsed = indicator_from_graphql(row)
    assert isinstance(parsed, OpenCTIIndicator)
    return map_indicator(parsed, POLICY, NOW)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records, defender_rows, changes)
def test_scoped_run_plans_what_the_full_run_plans_for_the_affected_keys(
    opencti_spec: list[tuple[str, int, bool, bool, int]],
    defender_spec: list[tuple[str, str, str, str]],
    edits: list[tuple[str, int, str, int]],
) -> None:
    rows = build_opencti(opencti_spec)
    defender = FakeDefender(build_defender(defender_spec))
    source = FakeSource(rows)
    engine = engine_for(source, defender)
    engine.plan()  # the full run that loads the index and the tenant counts

    before = {i: dict(r) for i, r in rows.items()}
    hints = mutate(rows, edits)
    scoped = engine.plan_ids(hints)
    full = engine_for(FakeSource(rows), defender).plan()

    # Keys the hints affect: those of every hinted id whose mapping changed, before and after
    # (an event that changes nothing desired is left to the scheduled run by design).
    affected: set[IndicatorKey] = set()
    for ident in hints:
        old, new = before.get(ident), rows.get(ident)
        if mapped(old) != mapped(new):
            affected |= keys_of(old) | keys_of(new)

    expected = [c for c in full.changes if c.key in affected]
    got = list(scoped.changes) if scoped is not None else []
    assert got == expected
    assert all(c.key in affected for c in got)
    assert source.id_reads[-1] == sorted(hints)


def test_an_event_for_an_indicator_outside_the_filters_plans_nothing() -> None:
    """A dependency or container-membership event names an indicator the stream's filters
    exclude: it is re-read, found absent, and contributes nothing."""
    rows = {
        "in": node("in", "v1.badhost.net", 90, [SCOPE_LABEL], False, 1),
        "out": node("out", "v2.badhost.net", 90, ["other-feed"], False, 1),
    }
    source = FakeSource(rows)
    engine = engine_for(source, FakeDefender([]))
    first = engine.plan()
    assert [c.key.value for c in first.changes if c.key] == ["v1.badhost.net"]
    assert engine.plan_ids(["out"]) is None
    rows["out"] = {**rows["out"], "x_opencti_score": 95}  # e.g. added to a report
    assert engine.plan_ids(["out"]) is None
    rows["out"]["objectLabel"] = [{"value": SCOPE_LABEL}]  # now selected by the filters
    plan = engine.plan_ids(["out"])
    assert plan is not None
    assert [(c.kind.value, c.key.value if c.key else "") for c in plan.changes] == [
        ("create", "v2.badhost.net")
    ]
