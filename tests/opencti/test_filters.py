"""The stream's filters as a listing filter: documented renames, everything else exact or
refused (fail closed), with a message naming the key and the way out."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.opencti.filters import UnusableFilterError, listing_filter, validate_group


def group(*filters: dict[str, Any], mode: str = "and", groups: list[Any] | None = None) -> Any:
    return {"mode": mode, "filters": list(filters), "filterGroups": groups or []}


def flt(key: Any, *values: str, operator: str = "eq", mode: str = "or") -> dict[str, Any]:
    return {"key": key, "values": list(values), "operator": operator, "mode": mode}


@pytest.mark.parametrize(
    ("stored", "api"),
    [
        ("x_opencti_workflow_id", "workflow_id"),
        ("labelledBy", "objectLabel"),
        ("markedBy", "objectMarking"),
        ("creator", "creator_id"),
        ("workflow_id", "workflow_id"),
        ("x_opencti_score", "x_opencti_score"),
    ],
)
def test_documented_renames_only(stored: str, api: str) -> None:
    out = validate_group(group(flt([stored], "v")), "live stream 's'")
    assert out["filters"][0]["key"] == [api]


@pytest.mark.parametrize(
    "key",
    ["objects", "priority", "severity", "fromId", "toId", "regardingOf", "connectedToId", "bogus"],
)
@pytest.mark.parametrize("where", ["and-group", "or-group", "nested"])
def test_keys_no_indicator_has_are_refused_anywhere(key: str, where: str) -> None:
    bad = flt([key], "x")
    ok = flt(["x_opencti_score"], "60", operator="gte")
    doc = {
        "and-group": group(ok, bad),
        "or-group": group(ok, bad, mode="or"),
        "nested": group(ok, groups=[group(bad, mode="or")]),
    }[where]
    with pytest.raises(UnusableFilterError) as caught:
        listing_filter(doc, "live stream 'approved'")
    text = str(caught.value)
    assert f"{key!r}" in text and "live stream 'approved'" in text
    assert "OPENCTI_LISTING_FILTERS" in text


@pytest.mark.parametrize(
    ("doc", "word"),
    [
        (group(flt(["name"], "x", operator="starts_with")), "starts_with"),
        (group(flt(["name"], "x"), mode="xor"), "xor"),
        (group(flt(["name"], "x", mode="nand")), "nand"),
        ([1, 2], "not a FilterGroup"),
        (group({"values": ["x"]}), "no key"),
    ],
    ids=["operator", "group-mode", "filter-mode", "not-a-group", "no-key"],
)
def test_operators_and_modes_we_cannot_pass_on_are_refused(doc: Any, word: str) -> None:
    with pytest.raises(UnusableFilterError, match=word):
        listing_filter(doc, "opencti.listing_filters")


def test_no_filter_lists_every_indicator_and_a_string_key_is_accepted() -> None:
    assert listing_filter(None, "s")["filterGroups"] == []
    out = listing_filter(group(flt("revoked", "false")), "s")
    assert out["filters"][0]["values"] == ["Indicator"]
    assert out["filterGroups"][0]["filters"][0]["key"] == ["revoked"]
