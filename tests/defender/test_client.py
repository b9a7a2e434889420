"""Listing, import, submit and delete against the emulator over real sockets."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.clock import FakeClock
from reconciler.defender import DefenderClient, odata_quote
from reconciler.defender.rejections import RejectionMemory
from reconciler.errors import AuthError, ListingError, RejectedError
from reconciler.model import IndicatorKey, IndicatorType, Ownership
from reconciler.owned import split_owned
from reconciler.sandbox.defender import DefenderEmulator


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("opencti", "'opencti'"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ("", "''"),
    ],
    ids=["plain", "quote", "only-quotes", "empty"],
)
def test_odata_quote(value: str, literal: str) -> None:
    assert odata_quote(value) == literal


# -- import -------------------------------------------------------------------------------


def test_import_1200_in_three_calls_results_in_order(
    emu: DefenderEmulator, client: DefenderClient, make_body
) -> None:
    bodies = [make_body(i) for i in range(1200)]
    results = client.import_indicators(bodies)
    assert emu.counts()["import"] == 3
    assert [r.index for r in results] == list(range(1200))
    assert [r.value for r in results] == [b["indicatorValue"] for b in bodies]
    assert all(r.ok and r.id for r in results)
    stored = {row["indicatorValue"]: row["id"] for row in emu.indicators()}
    assert {r.value: r.id for r in results} == stored


def test_import_surfaces_per_item_failures(
    emu: DefenderEmulator, client: DefenderClient, make_body
) -> None:
    bodies = [
        make_body(0),
        make_body(1, indicatorValue="not-a-hash"),
        make_body(2),
        make_body(3, indicatorType="DomainName", indicatorValue="bad domain!"),
    ]
    results = client.import_indicators(bodies)
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[1].reason and results[3].reason
    assert results[1].id is None
    assert len(emu.indicators()) == 2


def test_import_is_an_upsert(emu: DefenderEmulator, client: DefenderClient, make_body) -> None:
    first = client.import_indicators([make_body(1)])
    again = client.import_indicators([make_body(1, title="renamed")])
    assert first[0].id == again[0].id
    [row] = emu.indicators()
    assert row["title"] == "renamed"


def test_import_nothing_makes_no_call(emu: DefenderEmulator, client: DefenderClient) -> None:
    assert client.import_indicators([]) == []
    assert client.batch_delete([]) == []
    assert emu.counts()["import"] == emu.counts()["batch_delete"] == 0


def test_rejected_request_names_the_code_and_never_the_token(
    emu: DefenderEmulator, make_provider, make_client
) -> None:
    tokens: list[str] = []
    client = make_client(provider=make_provider(on_token=tokens.append))
    with pytest.raises(RejectedError) as caught:
        client.list_indicators("indicatorValue eq")
    assert caught.value.status == 400
    assert caught.value.code
    assert caught.value.code in str(caught.value)
    assert tokens and tokens[0] not in str(caught.value)


# -- delete -------------------------------------------------------------------------------


def test_batch_delete_1200_in_three_calls(
    emu: DefenderEmulator, client: DefenderClient, make_body
) -> None:
    results = client.import_indicators([make_body(i) for i in range(1200)])
    ids = [r.id for r in results if r.id]
    deleted = client.batch_delete(ids)
    assert emu.counts()["batch_delete"] == 3
    assert [d.id for d in deleted] == ids
    assert all(d.ok for d in deleted)
    assert emu.indicators() == []


def test_batch_delete_with_already_gone_ids_is_all_ok(
    emu: DefenderEmulator, client: DefenderClient, make_body
) -> None:
    results = client.import_indicators([make_body(i) for i in range(500)])
    ids = [str(r.id) for r in results]
    emu.delete_indicator(ids[137])
    ids.append("987654321")  # never existed
    deleted = client.batch_delete(ids)
    assert all(d.ok for d in deleted)
    assert {d.id for d in deleted if d.reason} == {ids[137], "987654321"}
    assert emu.indicators() == []
    # Batch of 500: a 404, one listing, the 499 present deleted. The 501st id: a 404, a listing.
    assert emu.counts()["batch_delete"] == 3
    assert emu.counts()["list"] == 2


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "non-atomic"])
def test_batch_delete_of_500_gone_ids_costs_two_calls(
    clock: FakeClock, connect: Any, atomic: bool
) -> None:
    """Ids all deleted already (expired, removed in the portal): one 404, one listing."""
    with DefenderEmulator(clock=clock, batch_delete_atomic=atomic) as emu:
        client = connect(emu)
        deleted = client.batch_delete([str(10_000 + i) for i in range(500)])
        assert all(d.ok and d.reason == "already gone" for d in deleted)
        assert (emu.counts()["batch_delete"], emu.counts()["list"]) == (1, 1)


# -- listing ------------------------------------------------------------------------------


def test_listing_25000_rows_in_three_overlapping_pages(clock, connect) -> None:
    with DefenderEmulator(clock=clock, quota=30_000, rate_limits=False) as emu:
        for i in range(25_000):
            emu.add_indicator(
                indicatorValue=f"20.{i // 65536}.{(i // 256) % 256}.{i % 256}",
                indicatorType="IpAddress",
            )
        rows = connect(emu).list_indicators(page_size=10_000)
        assert len(rows) == 25_000
        assert {r["id"] for r in rows} == {r["id"] for r in emu.indicators()}
        assert emu.counts()["list"] == 3


def _seed_domains(emu: DefenderEmulator, n: int) -> None:
    for i in range(n):
        emu.add_indicator(indicatorValue=f"host{i}.example", indicatorType="DomainName")


def test_listing_reads_exact_page_multiples(emu: DefenderEmulator, client: DefenderClient) -> None:
    _seed_domains(emu, 19)  # 10 + 9 new rows: the second page is full, a third holds the overlap
    rows = client.list_indicators(page_size=10)
    assert len(rows) == 19
    assert len({r["id"] for r in rows}) == 19


@pytest.mark.parametrize("victim", [0, 5, 9], ids=["first-row", "middle-row", "overlap-row"])
def test_listing_with_rows_moving_between_pages_fails(
    emu: DefenderEmulator, client: DefenderClient, victim: int
) -> None:
    _seed_domains(emu, 30)
    victim_id = emu.indicators()[victim]["id"]
    lists: list[str] = []

    def mutate(endpoint: str, method: str, path: str) -> None:
        if endpoint == "list":
            lists.append(path)
            if len(lists) == 2:  # just before the second page is served
                emu.delete_indicator(victim_id)

    emu.on_request(mutate)
    with pytest.raises(ListingError, match="rows moved during listing"):
        client.list_indicators(page_size=10)


def test_listing_tolerates_rows_appended_behind_the_cursor(
    emu: DefenderEmulator, client: DefenderClient
) -> None:
    # New rows get higher ids and land after the rows already read: nothing shifts, no hole.
    _seed_domains(emu, 30)
    lists: list[str] = []

    def append(endpoint: str, method: str, path: str) -> None:
        if endpoint == "list":
            lists.append(path)
            if len(lists) == 2:
                emu.add_indicator(indicatorValue="late.example", indicatorType="DomainName")

    emu.on_request(append)
    rows = client.list_indicators(page_size=10)
    assert [r["indicatorValue"] for r in rows][-1] == "late.example"
    assert len(rows) == 31


def test_listing_without_changes_passes_the_overlap_check(
    emu: DefenderEmulator, client: DefenderClient
) -> None:
    _seed_domains(emu, 30)
    rows = client.list_indicators(page_size=10)
    assert [r["id"] for r in rows] == [r["id"] for r in emu.indicators()]
    assert emu.counts()["list"] == 4  # 10 + 9 + 9 + 2 new rows


NASTY = [
    "https://x.test/a?b=c&d='e'#f%20g h/ü",
    "https://x.test/it's/100%/?q=a+b&r=%2F",
    "https://x.test/=&?#/'''",
    "https://例え.テスト/パス?クエリ=値",
]


def test_nasty_values_round_trip_through_filters(
    emu: DefenderEmulator, client: DefenderClient
) -> None:
    tag = "tag with 'quotes' & ?=#% ü"
    for value in NASTY:
        emu.add_indicator(indicatorValue=value, indicatorType="Url", application=tag)
    emu.add_indicator(indicatorValue="https://x.test/other", indicatorType="Url")
    for value in NASTY:
        rows = client.list_indicators(f"indicatorValue eq {odata_quote(value)}")
        assert [r["indicatorValue"] for r in rows] == [value]
    owned = split_owned(client.iter_indicators(), Ownership(tag)).owned
    assert sorted(o.indicator_value for o in owned) == sorted(NASTY)
    assert {o.indicator_type for o in owned} == {IndicatorType.URL}


def test_owned_means_any_tag_in_any_case(emu: DefenderEmulator, client: DefenderClient) -> None:
    emu.add_indicator(indicatorValue="a.example", indicatorType="DomainName", application="opencti")
    emu.add_indicator(
        indicatorValue="b.example",
        indicatorType="DomainName",
        application="OpenCTI Microsoft Defender Intel",
    )
    emu.add_indicator(indicatorValue="c.example", indicatorType="DomainName", application="SOC")
    emu.add_indicator(indicatorValue="d.example", indicatorType="DomainName", application="OpenCTI")
    ours = Ownership("opencti", ("OpenCTI Microsoft Defender Intel",))
    state = split_owned(client.iter_indicators(), ours)
    assert sorted(o.indicator_value for o in state.owned) == ["a.example", "b.example", "d.example"]
    assert state.non_owned_count == 1


def test_owned_row_with_unknown_names_is_read_as_it_is(
    emu: DefenderEmulator, client: DefenderClient
) -> None:
    """A portal edit or a name Microsoft added never makes the listing unusable: the row is
    read with its text and simply differs from every desired indicator."""
    row = emu.add_indicator(
        indicatorValue="odd.example", indicatorType="DomainName", application="opencti"
    )
    emu.update_indicator(row["id"], action="NotAnAction", severity="Severe")
    (ours,) = split_owned(client.iter_indicators(), Ownership("opencti")).owned
    assert (ours.id, ours.action, ours.severity) == (str(row["id"]), "NotAnAction", "Severe")
    assert ours.key == IndicatorKey(IndicatorType.DOMAIN_NAME, "odd.example")


def test_owned_row_without_an_id_makes_the_listing_unusable() -> None:
    row = {"indicatorType": "DomainName", "indicatorValue": "x.example", "application": "opencti"}
    with pytest.raises(ListingError, match="could not be read"):
        split_owned([{**row, "action": "Block"}], Ownership("opencti"))


def test_bad_filter_is_rejected_with_the_odata_code(client: DefenderClient) -> None:
    with pytest.raises(RejectedError) as caught:
        client.list_indicators("application eq")
    assert caught.value.status == 400


def test_auth_error_is_not_retried(emu: DefenderEmulator, client: DefenderClient) -> None:
    emu.force_responses("list", [403])
    with pytest.raises(AuthError):
        client.list_indicators()
    assert emu.counts()["list"] == 1


def test_batch_delete_on_a_non_atomic_server(clock, connect, make_body) -> None:
    # If Defender deletes the known ids of a 404 batch anyway, the re-listing sees that.
    with DefenderEmulator(clock=clock, batch_delete_atomic=False) as emu:
        client = connect(emu)
        ids = [str(r.id) for r in client.import_indicators([make_body(i) for i in range(16)])]
        emu.delete_indicator(ids[3])
        deleted = client.batch_delete(ids)
        assert all(d.ok for d in deleted)
        assert emu.indicators() == []


# -- a bad item in an import ----------------------------------------------------------------

BAD = {"indicatorValue": "microsoft.com", "indicatorType": "DomainName"}  # the emulator's deny list


@pytest.mark.parametrize(
    ("mode", "max_calls"),
    [("per_item", 2), ("whole_batch", 2 + 2 * 9)],  # 2 batches; + 2 * ceil(log2 500) splits
    ids=["per-item", "whole-batch"],
)
def test_one_bad_item_in_1000_costs_the_others_nothing(
    clock: FakeClock, connect: Any, make_body: Any, mode: str, max_calls: int
) -> None:
    with DefenderEmulator(clock=clock, batch_rejection=mode) as emu:
        client = connect(emu, rejections=RejectionMemory(3600, clock=clock))
        bodies = [make_body(i) for i in range(1000)]
        bodies[613] = make_body(613, **BAD)
        results = client.import_indicators(bodies)
        assert [r.index for r in results] == list(range(1000))
        failed = [r for r in results if not r.ok]
        assert [(r.index, r.value) for r in failed] == [(613, "microsoft.com")]
        assert "microsoft.com" in (failed[0].reason or "")
        assert len(emu.indicators()) == 999
        calls = emu.counts()["import"]
        assert calls <= max_calls
        # The refused body is remembered: the next run sends only the others, whole.
        again = client.import_indicators(bodies)
        assert emu.counts()["import"] - calls == 2
        assert [r.index for r in again if not r.ok] == [613]
        assert "refused earlier" in (again[613].reason or "")


def test_a_call_refused_for_every_item_stops_splitting(
    clock: FakeClock, connect: Any, make_body: Any
) -> None:
    """A reason every item shares must not turn one call into a thousand: the splitting stops
    after the cost of four bad items, and the rest is reported with the server's reason."""
    with DefenderEmulator(clock=clock, batch_rejection="whole_batch") as emu:
        client = connect(emu)
        bodies = [
            make_body(i, indicatorValue=f"bad-{i}.example", indicatorType="DomainName")
            for i in range(500)
        ]
        emu.deny_values = tuple(b["indicatorValue"] for b in bodies)
        results = client.import_indicators(bodies)
        assert not any(r.ok for r in results)
        assert all("bad-" in (r.reason or "") for r in results)
        assert emu.counts()["import"] <= 1 + 4 * 2 * 9
