"""The ``ids`` filter key of the fake OpenCTI: internal id, standard_id or any other STIX id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from reconciler.sandbox.dataset import generate_indicators, label_id
from reconciler.sandbox.opencti import STIX_EXT_OCTI, OpenCTIEmulator

from .conftest import TOKEN

LISTING = """query Indicators($filters: FilterGroup, $first: Int) {
  indicators(filters: $filters, first: $first) { edges { node { id standard_id } } }
}"""
EXTRA_STIX_ID = "indicator--0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"
C2 = label_id("c2")


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    records = generate_indicators(120, seed=23)
    labelled = [r for r in records if "c2" in r["labels"]]
    assert len(labelled) >= 5, "the dataset should hold enough c2-labelled records"
    # One record also answers to another STIX id (OpenCTI's x_opencti_stix_ids).
    labelled[2]["stix_ids"] = [EXTRA_STIX_ID]
    return records


@pytest.fixture(scope="module")
def emu(records: list[dict[str, Any]]) -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN) as emulator:
        emulator.load(records)
        yield emulator


def listing(emu: OpenCTIEmulator, filters: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(
        f"{emu.url}/graphql",
        json={"query": LISTING, "variables": {"filters": filters, "first": 500}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200
    return dict(response.json())


def listed_ids(emu: OpenCTIEmulator, filters: dict[str, Any]) -> set[str]:
    body = listing(emu, filters)
    assert body.get("errors") is None, body
    return {edge["node"]["id"] for edge in body["data"]["indicators"]["edges"]}


def ids_and_label(values: list[str], operator: str = "eq", mode: str = "or") -> dict[str, Any]:
    return {
        "mode": "and",
        "filters": [
            {"key": "ids", "values": values, "operator": operator, "mode": mode},
            {"key": "objectLabel", "values": [C2], "operator": "eq", "mode": "or"},
        ],
        "filterGroups": [],
    }


def test_ids_matches_internal_standard_and_other_stix_ids_anded_with_a_label(
    emu: OpenCTIEmulator, records: list[dict[str, Any]]
) -> None:
    labelled = [r for r in records if "c2" in r["labels"]]
    unlabelled = next(r for r in records if "c2" not in r["labels"])
    by_internal, by_standard, by_other = labelled[0], labelled[1], labelled[2]
    values = [
        by_internal["id"],
        by_standard["standard_id"],
        EXTRA_STIX_ID,
        unlabelled["id"],  # matched by ids, dropped by the label filter
        "indicator--00000000-0000-4000-8000-000000000000",  # matches nothing
    ]
    assert listed_ids(emu, ids_and_label(values)) == {
        by_internal["id"],
        by_standard["id"],
        by_other["id"],
    }


def test_ids_not_eq_excludes_every_id_form(
    emu: OpenCTIEmulator, records: list[dict[str, Any]]
) -> None:
    labelled = [r for r in records if "c2" in r["labels"]]
    values = [labelled[0]["id"], labelled[1]["standard_id"], EXTRA_STIX_ID]
    # As in OpenCTI: an ids filter is a terms query; not_eq excludes every listed id.
    excluded = ids_and_label(values, "not_eq", mode="or")
    assert listed_ids(emu, excluded) == {r["id"] for r in labelled[3:]}


@pytest.mark.parametrize(("operator", "mode"), [("gt", "or"), ("eq", "and"), ("not_eq", "and")])
def test_ids_takes_equality_in_mode_or_only(emu: OpenCTIEmulator, operator: str, mode: str) -> None:
    body = listing(emu, ids_and_label([EXTRA_STIX_ID], operator, mode))
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNSUPPORTED_ERROR"


def test_stix_ids_set_through_the_emulator_are_matched() -> None:
    with OpenCTIEmulator(token=TOKEN) as emu:
        created = emu.create_indicator(
            pattern="[domain-name:value = 'ids.example.com']",
            labels=["c2"],
            x_opencti_stix_ids=[EXTRA_STIX_ID],
        )
        emu.create_indicator(pattern="[domain-name:value = 'other.example.com']", labels=["c2"])
        assert listed_ids(emu, ids_and_label([EXTRA_STIX_ID])) == {created["id"]}
        stix = emu.events()[0]["data"]["data"]  # the event envelope carries the STIX object
        assert stix["extensions"][STIX_EXT_OCTI]["stix_ids"] == [EXTRA_STIX_ID]
