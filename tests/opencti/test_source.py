"""OpenCTISource against the fake OpenCTI over real sockets: paging, filters, errors, secrets."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from reconciler.errors import SourceError
from reconciler.opencti.filters import UnusableFilterError
from reconciler.opencti.source import INDICATOR_ATTRIBUTES, OpenCTISource
from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.opencti import OpenCTIEmulator

from .conftest import TOKEN


def source_for(emu: OpenCTIEmulator, **kwargs: Any) -> OpenCTISource:
    return OpenCTISource(emu.url, emu.token, emu.stream_id, **kwargs)


def score_at_least(value: int) -> dict[str, Any]:
    return {
        "mode": "and",
        "filters": [
            {"key": ["x_opencti_score"], "values": [str(value)], "operator": "gte", "mode": "or"}
        ],
        "filterGroups": [],
    }


def indicator_pages(emu: OpenCTIEmulator) -> list[dict[str, Any]]:
    return [r for r in emu.requests if r["field"] == "indicators"]


def test_lists_20k_indicators_whole_in_pages_of_5000(
    big_emulator: OpenCTIEmulator, big_dataset: list[dict[str, Any]]
) -> None:
    seen_before = len(indicator_pages(big_emulator))

    listed = source_for(big_emulator, page_size=5000).list_indicators()

    assert len(listed) == len(big_dataset)
    assert {n["id"] for n in listed} == {r["id"] for r in big_dataset}
    pages = indicator_pages(big_emulator)[seen_before:]
    assert len(pages) == 4
    assert [p["variables"]["first"] for p in pages] == [5000] * 4
    assert pages[0]["variables"]["after"] is None
    assert all(p["variables"]["after"] for p in pages[1:])
    assert all(p["variables"]["orderBy"] == "created_at" for p in pages)


def test_small_pages_give_the_same_set(emulator: OpenCTIEmulator) -> None:
    listed = source_for(emulator, page_size=7).list_indicators()
    assert sorted(n["id"] for n in listed) == sorted(r["id"] for r in emulator.indicators())
    assert len(indicator_pages(emulator)) == -(-200 // 7)


def test_listed_nodes_carry_the_selected_fields(emulator: OpenCTIEmulator) -> None:
    listed = source_for(emulator).list_indicators()
    top_level, depth = set(), 0
    for word in INDICATOR_ATTRIBUTES.replace("{", " { ").replace("}", " } ").split():
        depth += {"{": 1, "}": -1}.get(word, 0)
        if depth == 0 and word not in "{}":
            top_level.add(word)
    assert {"objectMarking", "createdBy", "objectLabel"} <= top_level
    by_id = {r["id"]: r for r in emulator.indicators()}
    for node in listed:
        assert top_level <= set(node)
        record = by_id[node["id"]]
        assert node["x_opencti_score"] == record["score"]
        assert [label["value"] for label in node["objectLabel"]] == record["labels"]
        # The policy rules' markings and author, as the reader sees them.
        assert [m["definition"] for m in node["objectMarking"]] == record["markings"]
        author = node["createdBy"]
        assert (author["name"] if author else None) == record["created_by"]
    hashed = next(
        n
        for n in listed
        if n["x_opencti_main_observable_type"] == "StixFile"
        and n["pattern_type"] == "stix"
        and n["x_opencti_observable_values"]
    )
    assert hashed["x_opencti_observable_values"][0]["hashes"][0]["algorithm"] in {
        "MD5",
        "SHA-1",
        "SHA-256",
    }


def test_stream_score_filter_is_honoured(
    big_emulator: OpenCTIEmulator, big_dataset: list[dict[str, Any]]
) -> None:
    big_emulator.stream_filters = score_at_least(50)
    try:
        listed = source_for(big_emulator).list_indicators()
    finally:
        big_emulator.stream_filters = None
    expected = {r["id"] for r in big_dataset if r["score"] is not None and r["score"] >= 50}
    assert 0 < len(expected) < len(big_dataset)
    assert {n["id"] for n in listed} == expected


def test_nested_groups_and_string_keys_are_honoured(emulator: OpenCTIEmulator) -> None:
    emulator.stream_filters = {
        "mode": "and",
        "filters": [{"key": "revoked", "values": ["false"], "operator": "eq"}],
        "filterGroups": [
            {
                "mode": "or",
                "filters": [
                    {"key": ["objectLabel"], "values": [label_id("c2")], "operator": "eq"},
                    {"key": "x_opencti_main_observable_type", "values": ["StixFile"]},
                ],
                "filterGroups": [],
            }
        ],
    }
    listed = source_for(emulator).list_indicators()
    expected = {
        r["id"]
        for r in emulator.indicators()
        if not r["revoked"] and ("c2" in r["labels"] or r["main_observable_type"] == "StixFile")
    }
    assert expected
    assert {n["id"] for n in listed} == expected


def test_stream_filters_are_read_from_the_stream(emulator: OpenCTIEmulator) -> None:
    source = source_for(emulator)
    assert source.stream_filters() is None
    emulator.stream_filters = score_at_least(30)
    assert source.stream_filters() == score_at_least(30)
    listing = source.listing_filters()
    assert listing["filters"][0]["values"] == ["Indicator"]
    assert listing["filterGroups"] == [score_at_least(30)]


def test_a_key_the_listing_cannot_apply_fails_closed(emulator: OpenCTIEmulator) -> None:
    """Dropping the key would widen an ``and`` (deploy more) or narrow an ``or`` (delete):
    the read stops, naming the key, the stream and the way out."""
    group = score_at_least(60)
    group["filters"].append({"key": ["objects"], "values": ["report-1"], "operator": "eq"})
    emulator.stream_filters = group
    before = len(indicator_pages(emulator))
    with pytest.raises(UnusableFilterError) as caught:
        source_for(emulator).list_indicators()
    message = str(caught.value)
    assert "'objects'" in message and "live stream 'stream-1'" in message
    assert "opencti.listing_filters" in message
    assert len(indicator_pages(emulator)) == before  # nothing was listed


def test_a_listing_filter_replaces_the_streams(emulator: OpenCTIEmulator) -> None:
    emulator.stream_filters = {
        "mode": "and",
        "filters": [{"key": ["objects"], "values": ["report-1"], "operator": "eq"}],
        "filterGroups": [],
    }
    listed = source_for(emulator, listing_override=score_at_least(60)).list_indicators()
    expected = {r["id"] for r in emulator.indicators() if (r["score"] or -1) >= 60}
    assert {n["id"] for n in listed} == expected


def test_page_error_mid_listing_raises_and_returns_nothing(
    big_emulator: OpenCTIEmulator,
) -> None:
    big_emulator.fail_page(2, "search engine timeout")
    source = source_for(big_emulator)
    with pytest.raises(SourceError) as caught:
        source.list_indicators()
    message = str(caught.value)
    assert "page 2" in message
    assert "search engine timeout" in message
    assert TOKEN not in message
    assert isinstance(caught.value.__cause__, ValueError)
    # The failure was one page only: the next listing is whole again.
    assert len(source.list_indicators()) == 20_000


def test_iter_pages_yields_the_good_pages_then_raises(big_emulator: OpenCTIEmulator) -> None:
    big_emulator.fail_page(3)
    received = []
    with pytest.raises(SourceError):
        for page in source_for(big_emulator).iter_pages():
            received.append(len(page))
    assert received == [2500, 2500]  # the default page size


def test_error_text_never_carries_the_token(emulator: OpenCTIEmulator) -> None:
    emulator.fail_page(1, f"backend rejected Bearer {TOKEN}")
    with pytest.raises(SourceError) as caught:
        source_for(emulator).list_indicators()
    assert TOKEN not in str(caught.value)
    assert "***" in str(caught.value)


def test_unknown_stream_is_a_source_error(emulator: OpenCTIEmulator) -> None:
    source = OpenCTISource(emulator.url, TOKEN, "no-such-stream")
    with pytest.raises(SourceError, match=r"no-such-stream.*does not exist"):
        source.list_indicators()
    assert "indicators" not in emulator.counts()


def test_bad_token_is_a_source_error_without_any_token(emulator: OpenCTIEmulator) -> None:
    wrong = "wrong-token-0000-9999"
    with pytest.raises(SourceError) as caught:
        OpenCTISource(emulator.url, wrong, emulator.stream_id).list_indicators()
    assert wrong not in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_unreachable_platform_is_a_source_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceError, match="not reachable"):
        OpenCTISource(f"http://127.0.0.1:{port}", TOKEN, "s").list_indicators()


def test_unknown_filter_key_is_a_source_error(emulator: OpenCTIEmulator) -> None:
    bogus = {"mode": "and", "filters": [{"key": "bogus_key", "values": ["1"]}], "filterGroups": []}
    with pytest.raises(SourceError, match="bogus_key"):
        list(source_for(emulator).iter_pages(bogus))


def test_empty_platform_lists_nothing() -> None:
    with OpenCTIEmulator(token=TOKEN) as emu:
        assert source_for(emu).list_indicators() == []
        assert emu.counts()["indicators"] == 1


def test_read_ids_returns_only_what_the_stream_filters_select(emulator: OpenCTIEmulator) -> None:
    """A scoped read: ids AND the stream's filters. An id outside the filters, or one that
    does not exist, is simply absent; pages and chunks of ids do not change the answer."""
    records = emulator.indicators()
    inside = [r for r in records if (r.get("score") or 0) >= 50][:5]
    outside = [r for r in records if (r.get("score") or 0) < 50][:5]
    assert inside and outside
    emulator.stream_filters = score_at_least(50)
    try:
        wanted = [r["id"] for r in inside + outside] + ["no-such-indicator"]
        before = len(indicator_pages(emulator))
        read = source_for(emulator, ids_per_call=4).read_ids(wanted, lambda row: row["id"])
        assert sorted(read) == sorted(r["id"] for r in inside)
        assert len(indicator_pages(emulator)) - before == 3  # 11 ids, 4 per call
        assert source_for(emulator).read_ids([], lambda row: row) == []
    finally:
        emulator.stream_filters = None


def test_client_is_built_lazily(emulator: OpenCTIEmulator) -> None:
    source = source_for(emulator)
    assert emulator.counts() == {}
    source.stream_filters()
    assert emulator.counts() == {"about": 1, "streamCollection": 1}
