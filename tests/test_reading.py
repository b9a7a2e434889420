"""The bounded read: OpenCTI highest score first, stopping once the free room is filled, the
boundary tie finished newest first, owned keys below the cut looked up by id; the planner then
decides exactly as if everything had been read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from reconciler.mapping import MappingPolicy
from reconciler.model import DefenderIndicator, IndicatorKey, IndicatorType
from reconciler.opencti.source import Page
from reconciler.plan import PlanPolicy, build_plan
from reconciler.reading import read_within_quota
from reconciler.scope import DesiredIndex

T = TypeVar("T")
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def node(n: int, score: int | None, age_hours: int = 0, revoked: bool = False) -> dict[str, Any]:
    stamp = (NOW - timedelta(hours=age_hours)).isoformat().replace("+00:00", "Z")
    return {
        "id": f"ind-{n}",
        "entity_type": "Indicator",
        "name": f"v{n}.badhost.net",
        "pattern_type": "stix",
        "pattern": f"[domain-name:value = 'v{n}.badhost.net']",
        "x_opencti_score": score,
        "x_opencti_main_observable_type": "Domain-Name",
        "revoked": revoked,
        "created_at": stamp,
        "updated_at": stamp,
    }


class Source:
    """OpenCTI as the reader sees it, in pages of 4, with the calls it received."""

    def __init__(self, rows: list[dict[str, Any]], *, total: bool = True) -> None:
        self.rows = rows
        self.total = total
        self.calls: list[str] = []
        self.rows_served = 0

    def listing_filters(self) -> dict[str, Any]:
        return {}

    def _pages(self, rows: list[dict[str, Any]]) -> Iterator[Page]:
        count = len(rows) if self.total else None
        for start in range(0, len(rows), 4):
            self.rows_served += len(rows[start : start + 4])
            yield Page(rows[start : start + 4], count)

    def iter_by_priority(self, listing: Any) -> Iterator[Page]:
        self.calls.append("priority")
        ranked = sorted(self.rows, key=lambda r: -(r["x_opencti_score"] or -1))
        return self._pages(ranked)

    def iter_score_tie(self, listing: Any, score: int | None) -> Iterator[Page]:
        self.calls.append(f"tie {score}")
        tie = [r for r in self.rows if r["x_opencti_score"] == score]
        return self._pages(sorted(tie, key=lambda r: r["updated_at"], reverse=True))

    def read_ids(
        self, ids: Iterable[str], parse: Callable[[dict[str, Any]], T], *, listing: Any = None
    ) -> list[T]:
        wanted = set(ids)
        self.calls.append(f"ids {sorted(wanted)}")
        return [parse(r) for r in self.rows if r["id"] in wanted]


def owned(n: int, opencti_id: str | None = None) -> DefenderIndicator:
    return DefenderIndicator.from_raw(
        {
            "id": str(1000 + n),
            "indicatorType": "DomainName",
            "indicatorValue": f"v{n}.badhost.net",
            "action": "Block",
            "application": "opencti",
            "externalId": opencti_id or f"ind-{n}",
        }
    )


def run(source: Source, free: int, owned_rows: Sequence[DefenderIndicator] = (), **kw: Any) -> Any:
    index = DesiredIndex(MappingPolicy())
    stats = read_within_quota(
        source, index, free=free, held=kw.get("held", set()), owned=owned_rows, now=NOW
    )
    state = index.full_state()
    plan = build_plan(
        state.desired,
        owned_rows,
        skipped=state.skipped,
        expired_keys=state.expired_keys,
        held_by_others={ident: "'SOC'" for ident in kw.get("held", set())},
        policy=PlanPolicy(quota=free),
        not_read=stats.not_read,
    )
    return stats, plan


def values(plan: Any, kind: str) -> set[str]:
    return {c.key.value.split(".")[0] for c in plan.changes if c.kind.value == kind and c.key}


def test_it_stops_once_the_room_is_filled_and_counts_the_rest() -> None:
    source = Source([node(n, 100 - n) for n in range(40)])
    stats, plan = run(source, free=5)
    assert values(plan, "create") == {"v0", "v1", "v2", "v3", "v4"}
    assert (stats.stopped, stats.cut_score, stats.matching) == (True, 96, 40)
    assert source.rows_served <= 8 + 4  # two pages of the ranked listing, one of the tie
    assert stats.not_read == 40 - stats.read
    assert plan.quota.not_read == stats.not_read > 0


def test_the_boundary_tie_is_finished_newest_first() -> None:
    """A feed gives a thousand indicators the same score: only the newest are read."""
    rows = [node(0, 90), node(1, 80)] + [node(n, 50, age_hours=n) for n in range(2, 1002)]
    source = Source(rows)
    stats, plan = run(source, free=5)
    assert values(plan, "create") == {"v0", "v1", "v2", "v3", "v4"}  # the 3 newest at 50
    assert source.calls == ["priority", "tie 50"]
    assert source.rows_served < 20
    assert stats.cut_score == 50


def test_everything_fits_everything_is_read() -> None:
    source = Source([node(n, n) for n in range(10)], total=False)
    stats, plan = run(source, free=100)
    assert len(values(plan, "create")) == 10
    assert (stats.stopped, stats.matching, stats.not_read) == (False, None, 0)


def test_keys_other_applications_hold_take_no_room() -> None:
    source = Source([node(n, 100 - n) for n in range(20)])
    held = {("DomainName", "v0.badhost.net"), ("DomainName", "v1.badhost.net")}
    stats, plan = run(source, free=3, held=held)
    assert values(plan, "create") == {"v2", "v3", "v4"}
    assert values(plan, "skip") == {"v0", "v1"}
    assert stats.cut_score == 96


@pytest.mark.parametrize(
    ("row", "kind", "reason"),
    [
        (node(30, 10), "delete", "quota"),  # fell below the cut
        (node(30, 10, revoked=True), "expire", "revoked"),
        (None, "delete", "not_in_opencti"),  # deleted, merged away, or left the stream
    ],
    ids=["below-the-cut", "revoked", "gone"],
)
def test_an_owned_key_not_read_is_looked_up_and_retired_for_its_reason(
    row: dict[str, Any] | None, kind: str, reason: str
) -> None:
    rows = [node(n, 100 - n) for n in range(20)] + ([row] if row else [])
    source = Source(rows)
    stats, plan = run(source, free=3, owned_rows=[owned(30)])
    assert source.calls[-1] == "ids ['ind-30']" and stats.looked_up == 1
    (change,) = [
        c
        for c in plan.changes
        if c.key and c.key.value == "v30.badhost.net" and c.kind.value != "skip"
    ]
    assert (change.kind.value, change.reason) == (kind, reason)


def test_owned_keys_already_read_cost_no_lookup() -> None:
    source = Source([node(n, 100 - n) for n in range(20)])
    stats, plan = run(source, free=3, owned_rows=[owned(0), owned(1)])
    assert source.calls == ["priority", "tie 98"] and stats.looked_up == 0
    v0 = IndicatorKey(IndicatorType.DOMAIN_NAME, "v0.badhost.net")
    assert [c.kind.value for c in plan.changes if c.key == v0] == ["update"]
