"""DesiredIndex: a scoped slice equals the same slice of a full merge; affected keys include
the keys an indicator held before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from reconciler.mapping import (
    DesiredState,
    MappingPolicy,
    OpenCTIIndicator,
    build_desired,
    indicator_from_graphql,
)
from reconciler.model import IndicatorKey, IndicatorType
from reconciler.scope import DesiredIndex

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def ind(id_: str, value: str, score: int = 50, **kw: object) -> OpenCTIIndicator:
    base: dict[str, object] = {
        "id": id_,
        "standard_id": None,
        "name": value,
        "description": None,
        "pattern": f"[ipv4-addr:value = '{value}']",
        "pattern_type": "stix",
        "score": score,
        "revoked": False,
        "valid_from": None,
        "valid_until": None,
        "created_at": datetime(2026, 5, 20, tzinfo=UTC),
        "updated_at": datetime(2026, 5, 25, tzinfo=UTC),
        "labels": (),
        "main_observable_type": "IPv4-Addr",
        "observable_values": (),
        "detection": True,
    }
    base.update(kw)
    return OpenCTIIndicator(**base)  # type: ignore[arg-type]


def key(v: str) -> IndicatorKey:
    return IndicatorKey(IndicatorType.IP_ADDRESS, v)


POLICY = MappingPolicy()


def test_full_state_equals_build_desired() -> None:
    items = [ind("a", "203.0.113.1", 70), ind("b", "203.0.113.1", 40), ind("c", "203.0.113.2")]
    index = DesiredIndex(POLICY)
    assert index.replace_all(items, now=NOW) == build_desired(items, POLICY, NOW)


def test_pattern_edit_affects_old_and_new_key() -> None:
    index = DesiredIndex(POLICY)
    index.replace_all([ind("a", "203.0.113.1")], now=NOW)
    affected = index.upsert(ind("a", "203.0.113.5"), now=NOW)
    assert affected == {key("203.0.113.1"), key("203.0.113.5")}
    state = index.state_for(affected)
    assert set(state.desired) == {key("203.0.113.5")}


def test_removing_one_contributor_moves_the_key_to_the_other() -> None:
    index = DesiredIndex(POLICY)
    index.replace_all([ind("a", "203.0.113.1", 70), ind("b", "203.0.113.1", 40)], now=NOW)
    assert index.state_for({key("203.0.113.1")}).desired[key("203.0.113.1")].external_id == "a"
    affected = index.remove("a")
    winner = index.state_for(affected).desired[key("203.0.113.1")]
    assert winner.external_id == "b" and winner.opencti_ids == ("b",)


def test_revocation_makes_an_expired_key() -> None:
    index = DesiredIndex(POLICY)
    index.replace_all([ind("a", "203.0.113.1")], now=NOW)
    affected = index.upsert(ind("a", "203.0.113.1", revoked=True), now=NOW)
    state = index.state_for(affected)
    assert not state.desired and key("203.0.113.1") in state.expired_keys


def test_scoped_slice_equals_slice_of_full_state() -> None:
    items = [ind(f"i{n}", f"203.0.113.{n % 7}", score=n * 7 % 100) for n in range(40)]
    index = DesiredIndex(POLICY)
    full = index.replace_all(items, now=NOW)
    keys = {key("203.0.113.3"), key("203.0.113.4")}
    sliced = index.state_for(keys)
    assert sliced.desired == {k: v for k, v in full.desired.items() if k in keys}


def test_replayed_or_irrelevant_update_affects_nothing() -> None:
    index = DesiredIndex(POLICY)
    index.replace_all([ind("a", "203.0.113.1")], now=NOW)
    assert index.upsert(ind("a", "203.0.113.1"), now=NOW) == set()
    assert index.upsert(ind("a", "203.0.113.1", score=90), now=NOW) == {key("203.0.113.1")}


def row(id_: str, value: str, updated: str, valid_until: str | None = None) -> dict[str, object]:
    return {
        "id": id_,
        "entity_type": "Indicator",
        "pattern_type": "stix",
        "pattern": f"[ipv4-addr:value = '{value}']",
        "x_opencti_score": 70,
        "x_opencti_main_observable_type": "IPv4-Addr",
        "created_at": updated,
        "updated_at": updated,
        "valid_until": valid_until,
    }


def test_a_full_read_maps_only_rows_that_changed_or_expired() -> None:
    index = DesiredIndex(POLICY)
    rows = [
        row("a", "203.0.113.1", "2026-05-25T00:00:00Z"),
        row("b", "203.0.113.2", "2026-05-25T00:00:00Z", valid_until="2026-06-03T00:00:00Z"),
    ]

    def full_read(when: datetime) -> DesiredState:
        index.begin()
        for r in rows:
            index.read_row(r, now=when)
        return index.finish()

    first = full_read(NOW)
    assert index.mapped == 2
    assert full_read(NOW) == first and index.mapped == 0  # nothing changed: from memory
    rows[0] = row("a", "203.0.113.9", "2026-05-31T00:00:00Z")  # edited (updated_at moves)
    edited = full_read(NOW)
    assert index.mapped == 1 and key("203.0.113.9") in edited.desired
    later = full_read(datetime(2026, 6, 4, tzinfo=UTC))  # b's valid_until has passed
    assert index.mapped == 1
    assert key("203.0.113.2") not in later.desired and key("203.0.113.2") in later.expired_keys
    assert later == build_desired(
        [i for i in map(indicator_from_graphql, rows) if isinstance(i, OpenCTIIndicator)],
        POLICY,
        datetime(2026, 6, 4, tzinfo=UTC),
    )


def test_a_failed_rebuild_keeps_the_last_complete_index() -> None:
    index = DesiredIndex(POLICY)
    complete = [ind("a", "203.0.113.1"), ind("b", "203.0.113.2")]
    before = index.replace_all(complete, now=NOW)

    def partial() -> Iterator[OpenCTIIndicator]:
        yield ind("a", "203.0.113.9")
        raise RuntimeError("page 2 failed")

    with pytest.raises(RuntimeError):
        index.replace_all(partial(), now=NOW)

    # The stream's scoped runs still see the last complete read, whole.
    assert index.loaded
    assert index.full_state() == before
    assert index.state_for({key("203.0.113.2")}).desired.keys() == {key("203.0.113.2")}
    assert index.upsert(ind("b", "203.0.113.3"), now=NOW) == {
        key("203.0.113.2"),
        key("203.0.113.3"),
    }


def test_a_failed_first_rebuild_leaves_no_index() -> None:
    index = DesiredIndex(POLICY)

    def partial() -> Iterator[OpenCTIIndicator]:
        yield ind("a", "203.0.113.9")
        raise RuntimeError("page 2 failed")

    with pytest.raises(RuntimeError):
        index.replace_all(partial(), now=NOW)
    assert not index.loaded
    assert len(index) == 0
