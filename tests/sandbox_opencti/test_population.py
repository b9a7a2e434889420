"""Generated populations: reproducible realistic records, the same answers as the same records
held whole, and created/changed/deleted indicators on top (over sockets, through pycti)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from reconciler.sandbox.dataset import DEFAULT_NOW, observables_from_pattern, parse_date
from reconciler.sandbox.opencti import STIX_EXT_OCTI, OpenCTIEmulator, Population
from reconciler.sandbox.opencti.listing import Sort, page
from reconciler.sandbox.opencti.store import RecordStore

from .cases import CASES, Case, expected, flt, group
from .conftest import TOKEN, first_run_recovery
from .test_filter_semantics import recovered_ids

N = 10_000


@pytest.fixture(scope="module")
def population() -> Population:
    return Population(N, seed=4)


@pytest.fixture(scope="module")
def records(population: Population) -> list[dict[str, Any]]:
    return [population.record(i) for i in range(N)]


@pytest.fixture(scope="module")
def stores(population: Population, records: list[dict[str, Any]]) -> tuple[Any, Any]:
    """The population served lazily, and the same records held whole."""
    lazy, whole = RecordStore(), RecordStore()
    lazy.load_generated(N, population.seed, None)
    whole.load(records)
    return lazy, whole


def listed(store: RecordStore, filters: Any, sort: Sort, size: int = 3000) -> list[str]:
    """Every row's internal id, page by page through cursors."""
    listing = store.listing(filters, "", sort)
    ids: list[str] = []
    after = None
    while True:
        chosen = page(listing, after, size)
        ids += [store.row(ref)["id"] for _, ref in chosen.rows]
        if not chosen.has_next:
            return ids
        after = chosen.rows[-1][0]


def test_same_seed_same_records_and_ids_round_trip() -> None:
    a, b = Population(500, seed=9), Population(500, seed=9)
    assert [a.record(i) for i in range(500)] == [b.record(i) for i in range(500)]
    assert a.record(7) != Population(500, seed=10).record(7)
    record = a.record(321)
    assert a.index_of(record["id"]) == a.index_of(record["standard_id"].upper()) == 321
    assert a.index_of("indicator--" + record["id"]) is None
    assert Population(400, seed=9).index_of(a.record(450)["id"]) is None  # beyond its size


def test_records_are_realistic(records: list[dict[str, Any]]) -> None:
    types = Counter(r["main_observable_type"] for r in records)
    for name in ("IPv4-Addr", "IPv6-Addr", "Domain-Name", "Hostname", "Url", "StixFile"):
        assert types[name] > 200, name
    assert Counter(r["pattern_type"] for r in records).keys() == {"stix", "yara", "sigma"}
    scores = Counter(r["score"] for r in records)
    assert all(scores[s] > 0 for s in (0, 1, 29, 30, 59, 60, 100, None))
    assert 0.01 < sum(r["revoked"] for r in records) / N < 0.03
    assert 0.4 < sum(r["status_id"] is not None for r in records) / N < 0.6
    now = DEFAULT_NOW
    lately = sum(parse_date(r["updated_at"]) > now - timedelta(days=20) for r in records)
    assert 0.6 < lately / N < 0.8
    for r in records[::97]:
        assert parse_date(r["created_at"]) <= parse_date(r["updated_at"]) <= now
        want = observables_from_pattern(r["pattern"]) if r["pattern_type"] == "stix" else []
        assert r["observable_values"] == want
    assert any(r["valid_until"] is None for r in records)
    assert any(r["valid_until"] and parse_date(r["valid_until"]) < now for r in records)
    names = Counter(r["name"] for r in records if r["pattern_type"] == "stix")
    assert 0 < sum(c - 1 for c in names.values()) < N * 0.02  # the deliberate duplicates


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_population_selects_as_the_same_records_held_whole(
    stores: tuple[Any, Any], records: list[dict[str, Any]], case: Case
) -> None:
    lazy, whole = stores
    filters = case.filters(records)
    sort = Sort.of("x_opencti_score", "desc")
    assert lazy.listing(filters, "", sort).total == len(expected(case, records))
    assert listed(lazy, filters, sort) == listed(whole, filters, sort)


@pytest.mark.parametrize(
    ("order_by", "mode"),
    [
        ("x_opencti_score", "asc"),
        ("created_at", "asc"),
        ("created_at", "desc"),
        ("updated_at", "desc"),
        ("modified", "asc"),
        ("confidence", "desc"),
        ("valid_until", "asc"),
        ("name", "asc"),
    ],
)
def test_a_population_orders_as_the_same_records_held_whole(
    stores: tuple[Any, Any], order_by: str, mode: str
) -> None:
    lazy, whole = stores
    filters = group(flt(["revoked"], ["false"]))
    sort = Sort.of(order_by, mode)
    assert listed(lazy, filters, sort) == listed(whole, filters, sort)


@pytest.fixture
def lazy_emu() -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN, heartbeat_interval=0.1) as emu:
        emu.load_generated(3000, seed=6)
        yield emu


def test_changes_apply_on_top_of_a_population(lazy_emu: OpenCTIEmulator) -> None:
    from pycti import OpenCTIApiClient

    api = OpenCTIApiClient(lazy_emu.url, TOKEN, log_level="error")

    def listing(**kw: Any) -> tuple[list[dict[str, Any]], int]:
        result = api.indicator.list(
            withPagination=True, customAttributes="id x_opencti_score", **kw
        )
        return result["entities"], result["pagination"]["globalCount"]

    top, total = listing(first=5, orderBy="x_opencti_score", orderMode="desc")
    assert total == 3000 and {n["x_opencti_score"] for n in top} == {100}
    moved, gone = top[0]["id"], top[1]["id"]
    lazy_emu.update_indicator(moved, score=1)
    lazy_emu.delete_indicator(gone)
    added = lazy_emu.create_indicator(pattern="[ipv4-addr:value = '198.51.100.7']", score=100)

    top, total = listing(first=500, orderBy="x_opencti_score", orderMode="desc")
    assert total == 3000  # one deleted, one created
    hundreds = [n["id"] for n in top if n["x_opencti_score"] == 100]
    assert moved not in hundreds and gone not in hundreds
    assert hundreds[-1] == added["id"]  # ties break on standard_id: a random one sorts last
    assert api.indicator.read(id=moved)["x_opencti_score"] == 1
    assert api.indicator.read(id=gone) is None
    ones, _ = listing(filters=group(flt(["x_opencti_score"], ["1"])), first=500)
    assert moved in {n["id"] for n in ones}
    assert [e["event"] for e in lazy_emu.events()] == ["update", "delete", "create"]
    assert lazy_emu.count() == 3000


def test_the_stream_recovers_a_population_through_its_filters(
    lazy_emu: OpenCTIEmulator,
) -> None:
    chosen = group(flt(["x_opencti_score"], ["60"], "gte"), flt(["revoked"], ["false"]))
    inside = [r for r in lazy_emu.indicators() if (r["score"] or -1) >= 60 and not r["revoked"]]
    changed = inside[3]["id"]
    lazy_emu.update_indicator(changed, description="changed while the stream was down")
    lazy_emu.delete_indicator(inside[4]["id"])
    lazy_emu.stream_filters = chosen
    assert recovered_ids(lazy_emu) == {r["id"] for r in inside} - {inside[4]["id"]}


def test_recovery_messages_are_in_update_order_with_unique_ids(
    lazy_emu: OpenCTIEmulator,
) -> None:
    lazy_emu.create_indicator(pattern="[domain-name:value = 'late.example.com']")
    messages = first_run_recovery(lazy_emu)
    keys = [tuple(map(int, m["id"].split("-"))) for m in messages]
    updated = [m["data"]["data"]["extensions"][STIX_EXT_OCTI]["updated_at"] for m in messages]
    assert len(messages) == 3001 and keys == sorted(set(keys))
    assert updated == sorted(updated, key=parse_date)
    assert {m["data"]["origin"]["referer"] for m in messages} == {"init"}


def test_cursors_continue_by_value_when_rows_change(lazy_emu: OpenCTIEmulator) -> None:
    from pycti import OpenCTIApiClient

    api = OpenCTIApiClient(lazy_emu.url, TOKEN, log_level="error")
    kw: dict[str, Any] = {"orderBy": "created_at", "orderMode": "asc", "withPagination": True}
    whole = api.indicator.list(first=300, customAttributes="id", **kw)["entities"]
    first = api.indicator.list(first=100, customAttributes="id", **kw)
    lazy_emu.delete_indicator(first["entities"][-1]["id"])  # the cursor's own row
    lazy_emu.delete_indicator(whole[150]["id"])  # a row of the next page
    after = first["pagination"]["endCursor"]
    nxt = api.indicator.list(first=100, after=after, customAttributes="id", **kw)["entities"]
    assert [n["id"] for n in nxt] == [n["id"] for n in whole[100:201] if n != whole[150]]
    with pytest.raises(ValueError, match="Invalid cursor"):
        api.indicator.list(first=10, after=after, orderBy="name", customAttributes="id")


def test_command_line_serves_a_lazy_population() -> None:
    import subprocess
    import sys

    import requests

    command = [sys.executable, "-m", "reconciler.sandbox.opencti", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--count", "200000", "--lazy"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split(" on ", 1)[1].split()[0]
        query = "query { indicators(first: 3) { edges { node { id } } pageInfo { globalCount } } }"
        answer = requests.post(
            f"{url}/graphql",
            json={"query": query},
            headers={"Authorization": "Bearer opencti-token"},
            timeout=10,
        ).json()
        assert answer["data"]["indicators"]["pageInfo"]["globalCount"] == 200_000
    finally:
        process.terminate()
        process.wait(timeout=5)
