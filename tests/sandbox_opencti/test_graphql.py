"""The fake's GraphQL side through pycti's real OpenCTIApiClient."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from reconciler.sandbox.dataset import generate_indicators, label_id
from reconciler.sandbox.opencti import (
    STIX_EXT_OCTI,
    OpenCTIEmulator,
    graphql_node,
    selected_fields,
    stix_object,
)

from .conftest import TOKEN


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return generate_indicators(300, seed=11)


@pytest.fixture(scope="module")
def emu(records: list[dict[str, Any]]) -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN, max_page_size=100) as emulator:
        emulator.load(records)
        yield emulator


@pytest.fixture(scope="module")
def api(emu: OpenCTIEmulator) -> Any:
    from pycti import OpenCTIApiClient

    return OpenCTIApiClient(emu.url, TOKEN, log_level="error")


def group(*filters: dict[str, Any], mode: str = "and", groups: Any = ()) -> dict[str, Any]:
    return {"mode": mode, "filters": list(filters), "filterGroups": list(groups)}


def flt(key: Any, values: list[str], operator: str = "eq", mode: str = "or") -> dict[str, Any]:
    return {"key": key, "values": values, "operator": operator, "mode": mode}


def ids_of(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["id"] for n in nodes}


def test_get_all_pages_through_everything(api: Any, records: list[dict[str, Any]]) -> None:
    nodes = api.indicator.list(getAll=True, first=1000, customAttributes="id entity_type")
    assert len(nodes) == 300  # first is capped at max_page_size=100: three pages
    assert ids_of(nodes) == {r["id"] for r in records}


def test_pagination_info_and_global_count(api: Any) -> None:
    page = api.indicator.list(first=40, withPagination=True, customAttributes="id")
    info = page["pagination"]
    assert len(page["entities"]) == 40
    assert info["hasNextPage"] is True and info["hasPreviousPage"] is False
    assert info["globalCount"] == 300
    nxt = api.indicator.list(
        first=40, after=info["endCursor"], withPagination=True, customAttributes="id"
    )
    assert nxt["pagination"]["hasPreviousPage"] is True
    assert not ids_of(page["entities"]) & ids_of(nxt["entities"])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param(
            group(flt("x_opencti_score", ["60"], "gte")),
            lambda r: r["score"] is not None and r["score"] >= 60,
            id="score-gte",
        ),
        pytest.param(
            group(flt(["x_opencti_score"], ["30"], "lt")),
            lambda r: r["score"] is not None and r["score"] < 30,
            id="score-lt-list-key",
        ),
        pytest.param(
            group(flt("x_opencti_score", ["0"], "not_eq")),
            lambda r: r["score"] != 0,
            id="score-not-eq",
        ),
        pytest.param(
            group(flt("x_opencti_score", [], "nil")), lambda r: r["score"] is None, id="score-nil"
        ),
        pytest.param(group(flt("revoked", ["true"])), lambda r: r["revoked"], id="revoked"),
        pytest.param(
            group(flt("x_opencti_main_observable_type", ["Url", "Hostname"])),
            lambda r: r["main_observable_type"] in ("Url", "Hostname"),
            id="types-or",
        ),
        pytest.param(
            group(flt("pattern_type", ["stix"], "not_eq")),
            lambda r: r["pattern_type"] != "stix",
            id="pattern-type",
        ),
        pytest.param(
            group(flt("objectLabel", [label_id("c2"), label_id("phishing")], mode="and")),
            lambda r: {"c2", "phishing"} <= set(r["labels"]),
            id="labels-and",
        ),
        pytest.param(
            group(
                flt("x_opencti_detection", ["true"]),
                groups=[
                    group(
                        flt("confidence", ["90"], "gt"),
                        flt("indicator_types", ["compromised"]),
                        mode="or",
                    )
                ],
            ),
            lambda r: (
                r["detection"] and (r["confidence"] > 90 or "compromised" in r["indicator_types"])
            ),
            id="nested-or-group",
        ),
    ],
)
def test_filters(api: Any, records: list[dict[str, Any]], filters: Any, expected: Any) -> None:
    nodes = api.indicator.list(filters=filters, getAll=True, first=100, customAttributes="id")
    want = {r["id"] for r in records if expected(r)}
    assert want, "the dataset should exercise this filter"
    assert ids_of(nodes) == want


def test_unknown_filter_key_is_an_error(api: Any) -> None:
    with pytest.raises(ValueError, match="no_such_key"):
        api.indicator.list(filters=group(flt("no_such_key", ["x"])))


def test_order_by_score_desc_is_stable(api: Any, records: list[dict[str, Any]]) -> None:
    nodes = api.indicator.list(
        orderBy="x_opencti_score",
        orderMode="desc",
        getAll=True,
        first=100,
        customAttributes="id x_opencti_score",
    )
    scores = [n["x_opencti_score"] for n in nodes]
    present = [s for s in scores if s is not None]
    assert present == sorted(present, reverse=True)
    assert len(nodes) == 300 and len(ids_of(nodes)) == 300


def test_unknown_order_is_an_error(api: Any) -> None:
    with pytest.raises(ValueError, match="IndicatorsOrdering"):
        api.indicator.list(orderBy="colour")


def test_fail_page_and_fail_after_pages(emu: OpenCTIEmulator, api: Any) -> None:
    emu.fail_page(1, "first page broke")
    with pytest.raises(ValueError, match="first page broke"):
        api.indicator.list(first=10)
    assert len(api.indicator.list(first=10)) == 10
    emu.fail_after_pages(1, "later pages broke")
    try:
        assert len(api.indicator.list(first=10)) == 10
        with pytest.raises(ValueError, match="later pages broke"):
            api.indicator.list(first=10)
    finally:
        emu.clear_failures()


def test_read_one_indicator_by_id(api: Any, records: list[dict[str, Any]]) -> None:
    node = api.indicator.read(id=records[0]["id"])
    assert node["id"] == records[0]["id"]
    assert node["pattern"] == records[0]["pattern"]


def test_to_stix_gives_the_stream_rendering(api: Any, records: list[dict[str, Any]]) -> None:
    nodes = api.indicator.list(first=5, toStix=True, orderBy="created_at", orderMode="asc")
    by_id = {r["id"]: r for r in records}
    for node in nodes:
        stix = json.loads(node["toStix"])
        assert stix == stix_object(by_id[stix["extensions"][STIX_EXT_OCTI]["id"]])


def test_selection_projects_top_level_fields() -> None:
    query = "query X { indicators(first: 2) { edges { node { id name objectLabel { id value } "
    query += "x_opencti_observable_values { type hashes { algorithm } } } } pageInfo { a } } }"
    assert selected_fields(query, "node") == {
        "id",
        "name",
        "objectLabel",
        "x_opencti_observable_values",
    }


def test_graphql_node_shape() -> None:
    record = next(
        r
        for r in generate_indicators(200, seed=2)
        if r["pattern"].startswith("[file:hashes.'SHA-256'") and " OR " in r["pattern"]
    )
    node = graphql_node(record)
    assert node["entity_type"] == "Indicator"
    assert [v["hashes"][0]["algorithm"] for v in node["x_opencti_observable_values"]] == [
        "SHA-256",
        "MD5",
    ]
    assert all(v["value"] is None for v in node["x_opencti_observable_values"])
    assert node["objectLabel"] == [
        {"id": label_id(v), "value": v, "color": node["objectLabel"][i]["color"]}
        for i, v in enumerate(record["labels"])
    ]
    assert set(node["observables"]) == {"edges"}


def test_stix_object_omits_empty_fields_and_keys_hashes() -> None:
    record = next(
        r
        for r in generate_indicators(300, seed=4)
        if r["pattern"].startswith("[file:hashes.'SHA-256'") and " OR " in r["pattern"]
    )
    record = {**record, "labels": [], "description": "", "valid_until": None}
    stix = stix_object(record)
    assert "labels" not in stix and "description" not in stix and "valid_until" not in stix
    assert stix["revoked"] is record["revoked"]
    extension = stix["extensions"][STIX_EXT_OCTI]
    assert extension["type"] == "Indicator" and extension["id"] == record["id"]
    assert "labels_ids" not in extension
    assert [list(v["hashes"]) for v in extension["observable_values"]] == [["SHA-256"], ["MD5"]]


def test_connector_state_round_trip(emu: OpenCTIEmulator, api: Any) -> None:
    register = """mutation RegisterConnector($input: RegisterConnectorInput) {
        registerConnector(input: $input) { id connector_state config { connection { host } } } }"""
    ping = """mutation PingConnector($id: ID!, $state: String) {
        pingConnector(id: $id, state: $state) { id connector_state } }"""
    first = api.query(register, {"input": {"id": "c-1", "name": "x", "type": "STREAM"}})
    assert first["data"]["registerConnector"]["connector_state"] is None
    assert "s3" not in first["data"]["registerConnector"]["config"]
    state = json.dumps({"start_from": "5-0"})
    assert (
        api.query(ping, {"id": "c-1", "state": state})["data"]["pingConnector"]["connector_state"]
        == state
    )
    again = api.query(register, {"input": {"id": "c-1", "name": "x", "type": "STREAM"}})
    assert again["data"]["registerConnector"]["connector_state"] == state
    assert emu.connector_states["c-1"] == state


def test_errors_are_http_200_with_errors(emu: OpenCTIEmulator) -> None:
    response = requests.post(
        f"{emu.url}/graphql",
        json={"query": "query { nonsense { id } }", "variables": {}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_bad_token_fails_the_health_check(emu: OpenCTIEmulator) -> None:
    from pycti import OpenCTIApiClient

    with pytest.raises(ValueError, match="not reachable"):
        OpenCTIApiClient(emu.url, "not-the-token", log_level="error")


def test_command_line_serves_and_prints_a_config_snippet() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler.sandbox.opencti", "--port", "0", "--count", "25"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(6)]
        url = lines[0].split(" on ", 1)[1].split()[0]
        assert f"url: {url}" in "".join(lines)
        assert "live_stream_id: stream-1" in "".join(lines)
        response = requests.post(
            f"{url}/graphql",
            json={"query": "query { indicators(first: 100) { edges { node { id } } } }"},
            headers={"Authorization": "Bearer opencti-token"},
            timeout=5,
        )
        assert len(response.json()["data"]["indicators"]["edges"]) == 25
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_search_matches_name_or_pattern(api: Any, records: list[dict[str, Any]]) -> None:
    target = next(r for r in records if r["main_observable_type"] == "Domain-Name")
    nodes = api.indicator.list(search=target["name"].upper(), first=100, customAttributes="id")
    assert target["id"] in ids_of(nodes)
    assert len(nodes) < len(records)
