"""Identities and sightings of the fake OpenCTI over real sockets: ``identityAdd`` upserts,
``stixSightingRelationshipAdd`` (required count, merge within 30 days), the sightings listing by
``fromId``/``toId``, edits, and sighting events delivered on the live stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.sandbox.opencti import STIX_EXT_OCTI, OpenCTIEmulator

from .conftest import TOKEN, StreamHelpers
from .writeback_support import DEFENDER, events_since, ext, gql, ip, live_messages, ok

IDENTITY = """mutation I($input: IdentityAddInput!) {
  identityAdd(input: $input) { id standard_id entity_type name }
}"""
SIGHT = """mutation S($s0: StixSightingRelationshipAddInput!) {
  s0: stixSightingRelationshipAdd(input: $s0) { id attribute_count first_seen last_seen }
}"""
LIST = """query L($filters: FilterGroup, $first: Int, $after: ID) {
  stixSightingRelationships(filters: $filters, first: $first, after: $after) {
    edges { node { id attribute_count first_seen last_seen description
      externalReferences { edges { node { id source_name external_id url } } }
      from { id } to { id } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
EDIT = """mutation E($id: ID!, $input: [EditInput]!) {
  e: stixSightingRelationshipEdit(id: $id) { fieldPatch(input: $input) {
    id attribute_count first_seen last_seen } }
}"""
SIGHTING_REF = """mutation R($id: ID!, $in: StixRefRelationshipAddInput!) {
  r: stixSightingRelationshipEdit(id: $id) { relationAdd(input: $in) { id } }
}"""
DAY1 = "2026-01-01T00:00:00.000Z"
DAY2 = "2026-01-02T00:00:00.000Z"
DAY20 = "2026-01-20T00:00:00.000Z"
MARCH = "2026-03-15T00:00:00.000Z"


@pytest.fixture
def emu() -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN, heartbeat_interval=0.2, retry_ms=100) as emulator:
        yield emulator


def identity(emu: OpenCTIEmulator, name: str, kind: str = "System") -> dict[str, Any]:
    data = ok(gql(emu, IDENTITY, {"input": {"type": kind, "name": name}}))
    result: dict[str, Any] = data["identityAdd"]
    return result


def sight(emu: OpenCTIEmulator, **fields: Any) -> Any:
    return gql(emu, SIGHT, {"s0": fields})


def by(key: str, *values: str) -> dict[str, Any]:
    return {"key": [key], "values": list(values), "operator": "eq", "mode": "or"}


def listed(emu: OpenCTIEmulator, *filters: dict[str, Any], first: int = 100) -> Any:
    group = {"mode": "and", "filters": list(filters), "filterGroups": []}
    return ok(gql(emu, LIST, {"filters": group, "first": first}))["stixSightingRelationships"]


def test_identity_add_upserts_by_type_and_name_in_any_case(emu: OpenCTIEmulator) -> None:
    system = identity(emu, "Contoso Defender")
    assert system["entity_type"] == "System"
    assert system["standard_id"].startswith("identity--")
    assert identity(emu, "contoso DEFENDER") == system
    org = identity(emu, "Contoso Defender", kind="Organization")
    assert org["id"] != system["id"]
    assert [i["name"] for i in emu.identities()] == ["Contoso Defender", "Contoso Defender"]
    wrong = gql(emu, IDENTITY, {"input": {"type": "Planet", "name": "Mars"}})
    assert wrong["data"] == {"identityAdd": None}
    assert wrong["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_sighting_add_requires_attribute_count(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("198.51.100.1"))
    where = identity(emu, "Tenant A")
    for fields in ({}, {"attribute_count": None}):
        answer = sight(emu, fromId=a["id"], toIds=[where["id"]], first_seen=DAY1, **fields)
        assert answer["data"] == {"s0": None}
        assert answer["errors"][0]["path"] == ["s0"]
        assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "attribute_count" in answer["errors"][0]["message"]
    missing = sight(emu, fromId="nope", toIds=[where["id"]], attribute_count=1)
    assert missing["errors"][0]["extensions"]["code"] == "MISSING_REFERENCE_ERROR"
    no_identity = sight(emu, fromId=a["id"], toIds=["nope"], attribute_count=1)
    assert no_identity["errors"][0]["extensions"]["code"] == "MISSING_REFERENCE_ERROR"
    assert emu.sightings() == []


def test_sightings_merge_within_30_days_and_replace_the_count(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("198.51.100.2"))
    where = identity(emu, "Tenant A")
    ref = emu.attach_reference(a["id"], **{"source_name": DEFENDER, "external_id": "alert-1"})
    first = ok(
        sight(
            emu,
            fromId=a["id"],
            toIds=[where["id"]],
            attribute_count=5,
            first_seen=DAY2,
            last_seen=DAY2,
            description="seen on 5 devices",
            externalReferences=[ref["id"]],
        )
    )["s0"]
    assert first["attribute_count"] == 5
    # Within 30 days: the same sighting; the count is replaced (lowered), dates widened.
    again = ok(
        sight(
            emu,
            fromId=a["standard_id"],
            toIds=[where["standard_id"]],
            attribute_count=2,
            first_seen=DAY1,
            last_seen=DAY20,
        )
    )["s0"]
    assert again["id"] == first["id"]
    assert (again["attribute_count"], again["first_seen"], again["last_seen"]) == (2, DAY1, DAY20)
    [only] = emu.sightings()
    assert only["description"] == "seen on 5 devices"  # not given: kept
    assert [r["id"] for r in only["external_references"]] == [ref["id"]]
    assert (only["from_id"], only["to_id"]) == (a["id"], where["id"])
    # More than 30 days after the first seen date: a new sighting.
    later = ok(sight(emu, fromId=a["id"], toIds=[where["id"]], attribute_count=1, first_seen=MARCH))
    assert later["s0"]["id"] != first["id"]
    assert later["s0"]["last_seen"] == MARCH
    assert [s["attribute_count"] for s in emu.sightings()] == [2, 1]


def test_sighting_listing_by_from_and_to(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("198.51.100.3"))
    b = emu.create_indicator(pattern=ip("198.51.100.4"))
    t1, t2 = identity(emu, "Tenant 1"), identity(emu, "Tenant 2")
    ref = emu.attach_reference(a["id"], source_name=DEFENDER, url="https://sec.example/alert/9")
    for indicator, where, count in ((a, t1, 1), (a, t2, 2), (b, t1, 3)):
        extra = {"externalReferences": [ref["id"]]} if count == 1 else {}
        ok(sight(emu, fromId=indicator["id"], toIds=[where["id"]], attribute_count=count, **extra))

    page = listed(emu, by("fromId", a["id"]), by("toId", t1["id"]))
    [edge] = page["edges"]
    node = edge["node"]
    assert node["attribute_count"] == 1
    assert (node["from"]["id"], node["to"]["id"]) == (a["id"], t1["id"])
    assert [e["node"]["url"] for e in node["externalReferences"]["edges"]] == [ref["url"]]
    assert page["pageInfo"]["hasNextPage"] is False

    assert [e["node"]["attribute_count"] for e in listed(emu, by("fromId", a["id"]))["edges"]] == [
        1,
        2,
    ]
    to_t1 = listed(emu, by("toId", t1["standard_id"]))["edges"]
    assert [e["node"]["attribute_count"] for e in to_t1] == [1, 3]
    # Pages follow creation order.
    first = listed(emu, first=2)
    assert first["pageInfo"]["hasNextPage"] is True
    rest = ok(gql(emu, LIST, {"first": 2, "after": first["pageInfo"]["endCursor"]}))
    assert [e["node"]["attribute_count"] for e in rest["stixSightingRelationships"]["edges"]] == [3]
    bad = gql(emu, LIST, {"filters": {"mode": "and", "filters": [by("name", "x")]}})
    assert bad["errors"][0]["extensions"]["code"] == "UNSUPPORTED_ERROR"


def test_sighting_edits_patch_fields_and_attach_references(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("198.51.100.5"))
    where = identity(emu, "Tenant A")
    sid = ok(sight(emu, fromId=a["id"], toIds=[where["id"]], attribute_count=3, first_seen=DAY1))[
        "s0"
    ]["id"]
    mark = len(emu.events())
    edits = [{"key": "attribute_count", "value": ["7"]}, {"key": "last_seen", "value": [DAY20]}]
    data = ok(gql(emu, EDIT, {"id": sid, "input": edits}))
    assert data["e"]["fieldPatch"]["attribute_count"] == 7
    assert data["e"]["fieldPatch"]["last_seen"] == DAY20
    [event] = events_since(emu, mark)
    assert event["event"] == "update" and event["data"]["data"]["type"] == "sighting"
    paths = {op["path"] for op in event["data"]["context"]["patch"]}
    assert paths == {"/count", "/last_seen"}
    ok(gql(emu, EDIT, {"id": sid, "input": edits}))  # unchanged: no event
    assert len(emu.events()) == mark + 1
    bad = gql(emu, EDIT, {"id": sid, "input": [{"key": "attribute_count", "value": ["many"]}]})
    assert bad["data"] == {"e": None}

    ref = ok(
        gql(
            emu,
            "mutation($i: ExternalReferenceAddInput!) { externalReferenceAdd(input: $i) { id } }",
            {"i": {"source_name": DEFENDER, "external_id": "alert-2"}},
        )
    )["externalReferenceAdd"]
    variables = {"id": sid, "in": {"toId": ref["id"], "relationship_type": "external-reference"}}
    assert ok(gql(emu, SIGHTING_REF, variables)) == {"r": {"relationAdd": {"id": ref["id"]}}}
    assert ok(gql(emu, SIGHTING_REF, variables)) == {"r": {"relationAdd": {"id": ref["id"]}}}
    events = events_since(emu, mark + 1)
    assert len(events) == 1
    assert events[0]["data"]["data"]["external_references"] == [
        {"source_name": DEFENDER, "external_id": "alert-2"}
    ]
    [shown] = emu.sightings()
    assert [r["external_id"] for r in shown["external_references"]] == ["alert-2"]


def test_sighting_events_are_stix_sightings_on_the_stream(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("198.51.100.6"))
    where = identity(emu, "Tenant A")
    seen = {"fromId": a["id"], "toIds": [where["id"]], "first_seen": DAY1, "last_seen": DAY2}
    created = ok(sight(emu, **seen, attribute_count=4))["s0"]
    ok(sight(emu, **seen, attribute_count=6))  # merged: update
    ok(sight(emu, **seen, attribute_count=6))  # no change: no event
    emu.delete_indicator(a["id"])  # its sightings go first

    messages = live_messages(emu)
    assert [(m["event"], m["data"]["data"]["type"]) for m in messages] == [
        ("create", "indicator"),
        ("create", "sighting"),
        ("update", "sighting"),
        ("delete", "sighting"),
        ("delete", "indicator"),
    ]
    stix = messages[1]["data"]["data"]
    assert stix["id"].startswith("sighting--")
    assert stix["sighting_of_ref"] == a["standard_id"]
    assert stix["where_sighted_refs"] == [where["standard_id"]]
    assert stix["count"] == 4
    assert stix["extensions"][STIX_EXT_OCTI]["id"] == created["id"]
    assert stix["extensions"][STIX_EXT_OCTI]["extension_type"] == "property-extension"
    update = messages[2]["data"]
    assert update["context"]["patch"] == [{"op": "replace", "path": "/count", "value": 6}]
    assert ext(update["data"])["id"] == created["id"]
    assert emu.sightings() == []


def test_pycti_stream_consumer_receives_sighting_events(
    emu: OpenCTIEmulator, stream_helpers: StreamHelpers
) -> None:
    a = emu.create_indicator(pattern=ip("198.51.100.7"))
    where = identity(emu, "Tenant A")
    _, received = stream_helpers.listen(emu)
    received.wait_for(lambda msgs: len(msgs) >= 1)  # first-run recovery: the indicator
    ok(sight(emu, fromId=a["id"], toIds=[where["id"]], attribute_count=1))
    emu.attach_reference(a["id"], source_name=DEFENDER, external_id="status")
    received.wait_for(lambda msgs: len(msgs) >= 3)
    kinds = [(name, body["data"]["type"]) for name, body in received.events()]
    assert kinds == [("create", "indicator"), ("create", "sighting"), ("update", "indicator")]
