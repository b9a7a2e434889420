"""What the fake answers for filters the platform refuses, and for keys no indicator carries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator

from .cases import flt, group
from .conftest import TOKEN

LISTING = """query Indicators($filters: FilterGroup) {
  indicators(filters: $filters, first: 1) { edges { node { id } } pageInfo { globalCount } }
}"""
N = 150


@pytest.fixture(scope="module")
def emu() -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN) as emulator:
        emulator.load(generate_indicators(N, seed=5))
        yield emulator


def answer(emu: OpenCTIEmulator, filters: Any) -> dict[str, Any]:
    response = requests.post(
        f"{emu.url}/graphql",
        json={"query": LISTING, "variables": {"filters": filters}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200
    return dict(response.json())


def error(emu: OpenCTIEmulator, filters: Any) -> dict[str, Any]:
    body = answer(emu, filters)
    assert body["data"] is None, body
    return dict(body["errors"][0])


def count(emu: OpenCTIEmulator, filters: Any) -> int:
    body = answer(emu, filters)
    assert "errors" not in body, body
    return int(body["data"]["indicators"]["pageInfo"]["globalCount"])


def test_unknown_keys_answer_the_platforms_error(emu: OpenCTIEmulator) -> None:
    nested = group(
        flt(["x_opencti_score"], ["50"], "gte"),
        groups=[group(flt(["no_such_key"], ["x"]), flt("other_bad", ["y"]), mode="or")],
    )
    err = error(emu, nested)
    assert err["message"] == "Incorrect filter keys not existing in any schema definition"
    assert err["extensions"]["code"] == "UNSUPPORTED_ERROR"
    assert err["extensions"]["data"]["keys"] == ["no_such_key", "other_bad"]
    assert err["name"] == "UNSUPPORTED_ERROR"


def test_pycti_reports_the_unknown_key(emu: OpenCTIEmulator) -> None:
    from pycti import OpenCTIApiClient

    api = OpenCTIApiClient(emu.url, TOKEN, log_level="error")
    with pytest.raises(ValueError, match=r"schema definition.*no_such_key"):
        api.indicator.list(filters=group(flt(["no_such_key"], ["x"])))


@pytest.mark.parametrize(
    ("filters", "enum"),
    [
        pytest.param(group(flt(["revoked"], ["true"], "bogus")), "FilterOperator", id="operator"),
        pytest.param(group(flt(["revoked"], ["true"], mode="xor")), "FilterMode", id="mode"),
        pytest.param(
            {"mode": "nand", "filters": [], "filterGroups": []}, "FilterMode", id="group-mode"
        ),
    ],
)
def test_values_outside_the_enums_fail_coercion(
    emu: OpenCTIEmulator, filters: Any, enum: str
) -> None:
    err = error(emu, filters)
    assert err["extensions"]["code"] == "BAD_USER_INPUT"
    assert f'does not exist in "{enum}" enum' in err["message"]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        pytest.param(group(flt(["name"], ["x"], "search")), "Not supported", id="not-emulated"),
        pytest.param(
            group(flt(["workflow_id"], ["x"], "gt")), "key=workflow_id", id="workflow-range"
        ),
        pytest.param(group(flt(["ids", "name"], ["x"])), "multiple keys", id="ids-with-others"),
        pytest.param(group(flt(["name", "pattern"], [], "nil")), "one field", id="nil-two-keys"),
        pytest.param(
            group(flt(["x_opencti_score", "confidence"], ["5"], "gt")), "one field", id="range-two"
        ),
        pytest.param(group({"key": [], "values": ["x"]}), "Incorrect filters format", id="no-key"),
    ],
)
def test_refused_filters_answer_unsupported(
    emu: OpenCTIEmulator, filters: Any, message: str
) -> None:
    err = error(emu, filters)
    assert err["extensions"]["code"] == "UNSUPPORTED_ERROR"
    assert message in err["message"]


@pytest.mark.parametrize(
    "key", ["fromId", "toId", "fromTypes", "toTypes", "regardingOf", "connectedToId"]
)
@pytest.mark.parametrize("operator", ["eq", "not_eq", "nil", "not_nil"])
def test_relationship_keys_are_accepted_and_match_no_indicator(
    emu: OpenCTIEmulator, key: str, operator: str
) -> None:
    assert count(emu, group(flt([key], ["Malware"], operator))) == 0
    either = group(flt([key], ["Malware"], operator), flt(["revoked"], ["true"]), mode="or")
    assert count(emu, either) == count(emu, group(flt(["revoked"], ["true"])))


@pytest.mark.parametrize("key", ["objects", "priority", "severity", "objectAssignee"])
def test_keys_of_other_entity_types_hold_no_value_on_an_indicator(
    emu: OpenCTIEmulator, key: str
) -> None:
    assert count(emu, group(flt([key], ["x"]))) == 0
    assert count(emu, group(flt([key], ["x"], "not_eq"))) == N
    assert count(emu, group(flt([key], [], "nil"))) == N
    assert count(emu, group(flt([key], [], "not_nil"))) == 0


def test_ids_nil_and_not_nil_match_nothing(emu: OpenCTIEmulator) -> None:
    assert count(emu, group(flt(["ids"], [], "nil"))) == 0
    assert count(emu, group(flt(["ids"], [], "not_nil"))) == 0


def test_substring_operators_on_strings(emu: OpenCTIEmulator) -> None:
    records = emu.indicators()
    assert count(emu, group(flt(["name"], ["SAMPLE"], "starts_with"))) == sum(
        r["name"].lower().startswith("sample") for r in records
    )
    assert count(emu, group(flt(["pattern"], ["hashes.md5"], "not_contains"))) == sum(
        "hashes.md5" not in r["pattern"].lower() for r in records
    )
    assert count(emu, group(flt(["x_opencti_score"], ["5"], "contains"))) == 0


def test_empty_values_mean_nil_for_eq_and_not_nil_for_not_eq(emu: OpenCTIEmulator) -> None:
    records = emu.indicators()
    unlabelled = sum(not r["labels"] for r in records)
    assert count(emu, group(flt(["objectLabel"], []))) == unlabelled
    assert count(emu, group(flt(["objectLabel"], [], "not_eq"))) == N - unlabelled
    assert count(emu, group(flt(["x_opencti_score"], [], "gt"))) == 0


def test_an_unusable_stream_filter_lets_nothing_through(emulator: OpenCTIEmulator) -> None:
    emulator.stream_filters = group(flt(["no_such_key"], ["x"]))
    emulator.create_indicator(pattern="[domain-name:value = 'unusable.example.com']")
    assert emulator.events() == []
