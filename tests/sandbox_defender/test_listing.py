"""GET /api/indicators: OData $filter, $top/$skip, nextLink paging, speed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler.sandbox.defender import DefenderEmulator, compile_filter

Body = Callable[..., dict[str, Any]]


@pytest.fixture
def rows(emu: DefenderEmulator, api: httpx.Client, body: Body) -> list[dict[str, Any]]:
    """Five indicators of mixed owners, types and actions."""
    api.post("/api/indicators", json=body(indicatorValue="a" * 40, title="O'Brien hash"))
    api.post("/api/indicators", json=body(indicatorValue="a" * 40, action="Warn", severity="Low"))
    api.post(
        "/api/indicators",
        json=body(
            indicatorType="DomainName",
            indicatorValue="evil.example.com",
            application="other-tool",
            generateAlert=False,
            rbacGroupNames=["Servers"],
        ),
    )
    api.post(
        "/api/indicators",
        json=body(
            indicatorType="Url",
            indicatorValue="https://evil.example.com/login",
            expirationTime=None,
        ),
    )
    emu.add_indicator(indicatorType="IpAddress", indicatorValue="8.8.4.4", title="portal")
    return emu.indicators()


def ids(api: httpx.Client, **params: Any) -> list[str]:
    response = api.get("/api/indicators", params=params)
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["value"]]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("application eq 'opencti'", ["1", "2", "4"]),
        ("application ne 'opencti'", ["3", "5"]),
        ("application eq null", ["5"]),
        ("indicatorType eq 'FileSha1' and action eq 'Warn'", ["2"]),
        ("action eq 'Warn' or indicatorType eq 'Url'", ["2", "4"]),
        ("not (application eq 'opencti')", ["3", "5"]),
        (
            "(indicatorType eq 'Url' or indicatorType eq 'DomainName') "
            "and application eq 'opencti'",
            ["4"],
        ),
        ("title eq 'O''Brien hash'", ["1"]),
        ("contains(title,'''Brien')", ["1"]),
        ("startswith(indicatorValue,'https://')", ["4"]),
        ("contains(indicatorValue,'evil')", ["3", "4"]),
        ("generateAlert eq false", ["3", "5"]),
        ("severity eq 'Low'", ["2"]),
        ("expirationTime gt 2029-12-31T00:00:00Z", ["1", "2", "3"]),
        ("expirationTime eq null", ["4", "5"]),
        ("creationTimeDateTimeUtc ge 2026-01-01T00:00:00Z", ["1", "2", "3", "4", "5"]),
        ("creationTimeDateTimeUtc lt 2026-01-01T00:00:00Z", []),
        ("createdBy eq '11111111-1111-4111-8111-111111111111'", ["1", "2", "3", "4"]),
        ("rbacGroupNames eq 'Servers'", ["3"]),
        ("createdByDisplayName eq 'Admin'", ["5"]),
    ],
)
def test_filter(api: httpx.Client, rows: Any, expression: str, expected: list[str]) -> None:
    assert ids(api, **{"$filter": expression}) == expected


def test_filter_with_plus_encoded_spaces(api: httpx.Client, rows: Any) -> None:
    response = api.get("/api/indicators?$filter=action+eq+'Warn'")
    assert [row["id"] for row in response.json()["value"]] == ["2"]


@pytest.mark.parametrize(
    "expression",
    [
        "colour eq 'red'",
        "id eq '1'",
        "title eq 'unterminated",
        "title eq",
        "title like 'x'",
        "(title eq 'x'",
        "title eq 'x' )",
        "expirationTime gt 2026-13-45T00:00:00Z",
    ],
)
def test_bad_filter_is_odata_error(api: httpx.Client, expression: str) -> None:
    response = api.get("/api/indicators", params={"$filter": expression})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ODataError"


@pytest.mark.parametrize(
    "params",
    [{"$top": "10001"}, {"$top": "0"}, {"$top": "x"}, {"$skip": "-1"}, {"$orderby": "id"}],
    ids=["top-too-big", "top-zero", "top-text", "skip-negative", "orderby"],
)
def test_bad_query_options(api: httpx.Client, params: dict[str, str]) -> None:
    response = api.get("/api/indicators", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ODataError"


def test_top_10000_is_allowed(api: httpx.Client) -> None:
    assert api.get("/api/indicators", params={"$top": "10000"}).status_code == 200


def test_top_and_skip_page_without_next_link(api: httpx.Client, rows: Any) -> None:
    response = api.get("/api/indicators", params={"$top": 2, "$skip": 1}).json()
    assert [row["id"] for row in response["value"]] == ["2", "3"]
    assert "@odata.nextLink" not in response
    assert response["@odata.context"].endswith("/api/$metadata#Indicators")
    assert ids(api, **{"$top": 2, "$skip": 10}) == []


def test_next_link_pages_through_everything_in_id_order(
    emu: DefenderEmulator, api: httpx.Client, rows: Any
) -> None:
    emu.page_size = 2
    emu.delete_indicator("2")  # ids stay ordered with a gap
    seen: list[str] = []
    url: str | None = "/api/indicators?$filter=" + "application ne 'nobody'"
    links = []
    while url:
        payload = api.get(url).json()
        seen += [row["id"] for row in payload["value"]]
        url = payload.get("@odata.nextLink")
        links.append(url)
    assert seen == ["1", "3", "4", "5"]
    assert links[0] is not None and links[0].startswith(f"{emu.url}/api/indicators?$filter=")
    assert "$skip=2" in links[0]
    assert links[-1] is None


def test_row_deleted_between_pages_shifts_skip(
    emu: DefenderEmulator, api: httpx.Client, rows: Any
) -> None:
    """A delete between two $skip pages makes a client miss a row: the real hazard of $skip."""
    first = ids(api, **{"$top": 2})
    emu.on_request(lambda endpoint, method, path: emu.delete_indicator("1"))
    second = ids(api, **{"$top": 2, "$skip": 2})
    assert first == ["1", "2"]
    assert second == ["4", "5"]  # "3" slid onto the first page


def test_default_page_is_10000_with_next_link(emu: DefenderEmulator, api: httpx.Client) -> None:
    for i in range(10_001):
        emu.add_indicator(indicatorType="FileSha256", indicatorValue=f"{i:064x}")
    first = api.get("/api/indicators").json()
    assert len(first["value"]) == 10_000
    assert first["@odata.nextLink"] == f"{emu.url}/api/indicators?$skip=10000"
    second = api.get(first["@odata.nextLink"]).json()
    assert [row["id"] for row in second["value"]] == ["10001"]
    assert "@odata.nextLink" not in second


def test_listing_25000_rows_is_fast(emu: DefenderEmulator, api: httpx.Client) -> None:
    for i in range(25_000):
        emu.add_indicator(indicatorType="FileSha256", indicatorValue=f"{i:064x}")
    started = time.perf_counter()
    total = 0
    for skip in (0, 10_000, 20_000):
        total += len(
            api.get("/api/indicators", params={"$top": 10_000, "$skip": skip}).json()["value"]
        )
    filtered = api.get("/api/indicators", params={"$filter": "contains(indicatorValue,'ff')"})
    elapsed = time.perf_counter() - started
    assert total == 25_000
    assert filtered.status_code == 200
    assert elapsed < 5, elapsed


def test_compile_filter_is_usable_directly() -> None:
    predicate = compile_filter("startswith(title,'a') and not generateAlert eq true")
    assert predicate({"title": "abc", "generateAlert": False})
    assert not predicate({"title": "abc", "generateAlert": True})
