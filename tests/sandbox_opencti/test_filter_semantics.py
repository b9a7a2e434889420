"""Stream filters as the platform applies them: the same selection in an ``indicators`` listing
(through pycti's real OpenCTIApiClient) and in the live stream (first-run recovery over SSE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import STIX_EXT_OCTI, OpenCTIEmulator

from .cases import CASES, Case, expected
from .conftest import TOKEN, first_run_recovery


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return generate_indicators(800, seed=31)


@pytest.fixture(scope="module")
def emu(records: list[dict[str, Any]]) -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN, max_page_size=500, heartbeat_interval=0.1) as emulator:
        emulator.load(records)
        yield emulator


@pytest.fixture(scope="module")
def api(emu: OpenCTIEmulator) -> Any:
    from pycti import OpenCTIApiClient

    return OpenCTIApiClient(emu.url, TOKEN, log_level="error")


def recovered_ids(emu: OpenCTIEmulator) -> set[str]:
    """Internal ids of the first-run recovery of a connection from the very beginning."""
    return {m["data"]["data"]["extensions"][STIX_EXT_OCTI]["id"] for m in first_run_recovery(emu)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_listing_selects_what_the_stream_filter_says(
    api: Any, records: list[dict[str, Any]], case: Case
) -> None:
    want = expected(case, records)
    assert 0 < len(want) < len(records), "the dataset should exercise this filter"
    nodes = api.indicator.list(
        filters=case.filters(records), getAll=True, first=500, customAttributes="id"
    )
    assert {n["id"] for n in nodes} == want


def test_the_live_stream_applies_the_same_filters(
    emu: OpenCTIEmulator, records: list[dict[str, Any]]
) -> None:
    try:
        for case in CASES:
            emu.stream_filters = case.filters(records)
            assert recovered_ids(emu) == expected(case, records), case.name
    finally:
        emu.stream_filters = None


def test_status_is_rendered_in_both_shapes(api: Any, records: list[dict[str, Any]]) -> None:
    with_status = next(r for r in records if r["status_id"])
    node = api.indicator.read(id=with_status["id"], customAttributes="id status { id }")
    assert node["status"]["id"] == with_status["status_id"]
    assert node["status"]["template"]["name"] in (
        "NEW",
        "IN_PROGRESS",
        "ANALYZED",
        "APPROVED",
        "CLOSED",
    )
    stix = json.loads(api.indicator.read(id=with_status["id"], customAttributes="toStix")["toStix"])
    assert stix["extensions"][STIX_EXT_OCTI]["workflow_id"] == with_status["status_id"]


def test_status_set_through_the_emulator_moves_the_indicator_in_and_out_of_the_stream() -> None:
    approved = {
        "mode": "and",
        "filters": [{"key": ["workflow_id"], "values": ["placeholder"], "operator": "eq"}],
        "filterGroups": [],
    }
    with OpenCTIEmulator(token=TOKEN) as emu:
        approved["filters"][0]["values"] = [emu.status_id("APPROVED")]
        emu.stream_filters = approved
        a = emu.create_indicator(pattern="[domain-name:value = 'wf.example.com']")
        emu.update_indicator(a["id"], x_opencti_workflow_id="APPROVED")
        emu.update_indicator(a["id"], status_id=emu.status_id("CLOSED"))
        events = emu.events()
        assert [e["event"] for e in events] == ["create", "delete"]
        assert events[0]["data"]["type"] == "update"
        with pytest.raises(ValueError, match="workflow status"):
            emu.update_indicator(a["id"], status_id="NOT_A_STATUS")
