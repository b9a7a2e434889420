"""Write-back mutations of the fake OpenCTI over real sockets: documents with many aliased root
fields, partial failures, external references (upsert, attach, detach, patch, delete) and their
live-stream events, the ``ids`` listing with ``externalReferences``, and the test knobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator

from .conftest import TOKEN
from .writeback_support import DEFENDER, events_since, ext, gql, ip, ok

ADD_TWO = """mutation WriteBack($i0: ExternalReferenceAddInput!, $i1: ExternalReferenceAddInput!) {
  r0: externalReferenceAdd(input: $i0) { id source_name external_id url description }
  r1: externalReferenceAdd(input: $i1) { id source_name external_id url description }
}"""
ATTACH = """mutation Attach($id0: ID!, $in0: StixRefRelationshipAddInput!) {
  a0: stixDomainObjectEdit(id: $id0) { relationAdd(input: $in0) { id } }
}"""
DETACH = """mutation Detach($id0: ID!, $t0: ID!) {
  d0: stixDomainObjectEdit(id: $id0) {
    relationDelete(toId: $t0, relationship_type: "external-reference") { id }
  }
}"""
PATCH = """mutation Patch($id: ID!, $input: [EditInput]!) {
  p: externalReferenceEdit(id: $id) { fieldPatch(input: $input) { id description } }
}"""
DELETE = """mutation Delete($id: ID!) { x: externalReferenceEdit(id: $id) { delete } }"""
BY_IDS = """query Indicators($filters: FilterGroup, $first: Int) {
  indicators(filters: $filters, first: $first) {
    edges { node { id revoked externalReferences { edges { node {
      id standard_id source_name external_id url description } } } } }
  }
}"""
REF_PATH = "/external_references"


@pytest.fixture
def emu() -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN, heartbeat_interval=0.2, retry_ms=100) as emulator:
        yield emulator


def status_ref(external_id: str, description: str = "deployed") -> dict[str, Any]:
    return {"source_name": DEFENDER, "external_id": external_id, "description": description}


def attach_vars(indicator: str, ref: str) -> dict[str, Any]:
    return {"id0": indicator, "in0": {"toId": ref, "relationship_type": "external-reference"}}


def by_ids(ids: list[str]) -> dict[str, Any]:
    return {
        "mode": "and",
        "filters": [{"key": ["ids"], "values": ids, "operator": "eq", "mode": "or"}],
        "filterGroups": [],
    }


# --------------------------------------------------------------------------- documents


def test_aliased_root_fields_each_answer_under_their_alias(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.1"))
    b = emu.create_indicator(pattern=ip("203.0.113.2"))
    refs = ok(gql(emu, ADD_TWO, {"i0": status_ref("a"), "i1": status_ref("b", "pending")}))
    assert set(refs) == {"r0", "r1"}
    assert refs["r0"]["external_id"] == "a" and refs["r1"]["description"] == "pending"
    assert refs["r0"]["id"] != refs["r1"]["id"]

    attach_two = """mutation Attach($id0: ID!, $in0: StixRefRelationshipAddInput!,
        $id1: ID!, $in1: StixRefRelationshipAddInput!) {
      a0: stixDomainObjectEdit(id: $id0) { relationAdd(input: $in0) { id } }
      a1: stixDomainObjectEdit(id: $id1) { relationAdd(input: $in1) { id } }
    }"""
    variables = {
        **attach_vars(a["id"], refs["r0"]["id"]),
        "id1": b["standard_id"],  # any id of the indicator
        "in1": {"toId": refs["r1"]["id"], "relationship_type": "external-reference"},
    }
    data = ok(gql(emu, attach_two, variables))
    assert data == {
        "a0": {"relationAdd": {"id": refs["r0"]["id"]}},
        "a1": {"relationAdd": {"id": refs["r1"]["id"]}},
    }
    assert [r["external_id"] for r in emu.external_references(a["id"])] == ["a"]
    assert [r["description"] for r in emu.external_references(b["id"])] == ["pending"]

    logged = [r for r in emu.requests if r.get("fields")]
    assert logged[-1]["field"] == "stixDomainObjectEdit"
    assert logged[-1]["fields"] == ["stixDomainObjectEdit", "stixDomainObjectEdit"]
    assert emu.mutation_count("externalReferenceAdd") == 2
    assert emu.mutation_count("stixDomainObjectEdit") == 2
    assert emu.mutation_count() == 4


def test_a_failing_root_field_is_null_with_an_error_path_the_others_apply(
    emu: OpenCTIEmulator,
) -> None:
    answer = gql(emu, ADD_TWO, {"i0": {"external_id": "no-source"}, "i1": status_ref("kept")})
    assert answer["data"]["r0"] is None
    assert answer["data"]["r1"]["external_id"] == "kept"
    [error] = answer["errors"]
    assert error["path"] == ["r0"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "source_name" in error["message"]
    assert [r["external_id"] for r in emu.all_external_references()] == ["kept"]


def test_an_unknown_root_field_or_bad_syntax_fails_the_whole_document(
    emu: OpenCTIEmulator,
) -> None:
    unknown = """mutation M($i0: ExternalReferenceAddInput!) {
      r0: externalReferenceAdd(input: $i0) { id }
      r1: noSuchMutation(input: $i0) { id }
    }"""
    answer = gql(emu, unknown, {"i0": status_ref("x")})
    assert answer["data"] is None
    assert answer["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    broken = gql(emu, "mutation { r0: externalReferenceAdd(input: $i0 { id }", {})
    assert broken["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    bad_nested = gql(emu, 'mutation { e: stixDomainObjectEdit(id: "x") { fieldPatch { id } } }')
    assert bad_nested["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert emu.all_external_references() == []
    assert emu.mutation_count() == 0


def test_queries_still_answer_their_first_root_field(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.3"))
    query = """query I($id: String!) {
      indicator(id: $id) { id externalReferences { edges { node { id } } } }
    }"""
    data = ok(gql(emu, query, {"id": a["standard_id"]}))
    assert data == {"indicator": {"id": a["id"], "externalReferences": {"edges": []}}}
    assert emu.requests[-1] == {"field": "indicator", "variables": {"id": a["standard_id"]}}


def test_fail_mutations_fails_the_next_n_executions_of_one_root_field(
    emu: OpenCTIEmulator,
) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.4"))
    emu.fail_mutations("externalReferenceAdd", 3, message="shard unavailable")
    first = gql(emu, ADD_TWO, {"i0": status_ref("a"), "i1": status_ref("b")})
    assert first["data"] == {"r0": None, "r1": None}
    assert [(e["path"], e["extensions"]["code"]) for e in first["errors"]] == [
        (["r0"], "DATABASE_ERROR"),
        (["r1"], "DATABASE_ERROR"),
    ]
    assert first["errors"][0]["message"] == "shard unavailable"
    ref = emu.attach_reference(a["id"], **status_ref("other"))  # Python helpers are not knobbed
    # One failure left: r0 fails, r1 goes through; other root fields are never affected.
    second = gql(emu, ADD_TWO, {"i0": status_ref("a"), "i1": status_ref("b")})
    assert second["data"]["r0"] is None and second["data"]["r1"]["external_id"] == "b"
    assert [e["path"] for e in second["errors"]] == [["r0"]]
    third = gql(emu, ADD_TWO, {"i0": status_ref("a"), "i1": status_ref("b")})
    assert "errors" not in third
    assert ok(gql(emu, DETACH, {"id0": a["id"], "t0": ref["id"]}))["d0"] == {
        "relationDelete": {"id": a["id"]}
    }
    assert emu.mutation_count("externalReferenceAdd") == 6  # failed executions count too

    emu.fail_mutations("stixDomainObjectEdit", 1)
    failed = gql(emu, ATTACH, attach_vars(a["id"], ref["id"]))
    assert failed["errors"][0]["message"] == "Simulated mutation failure"
    emu.fail_mutations("stixDomainObjectEdit", 5)
    emu.clear_failures()
    assert "errors" not in gql(emu, ATTACH, attach_vars(a["id"], ref["id"]))


# --------------------------------------------------------------------------- upserts


def test_external_reference_upsert_by_url_and_by_source_and_external_id(
    emu: OpenCTIEmulator,
) -> None:
    by_url = {"source_name": DEFENDER, "url": "https://security.microsoft.com/x/1"}
    one = ok(gql(emu, ADD_TWO, {"i0": by_url, "i1": status_ref("e-1", "pending")}))
    # Same url, other source and id: the same reference (the url is its identity).
    again = {**by_url, "external_id": "other", "description": "described"}
    two = ok(gql(emu, ADD_TWO, {"i0": again, "i1": status_ref("e-1", "deployed")}))
    assert two["r0"]["id"] == one["r0"]["id"]
    assert two["r0"]["description"] == "described"
    assert two["r0"]["external_id"] is None  # only the description is updated
    assert two["r1"]["id"] == one["r1"]["id"]
    assert two["r1"]["description"] == "deployed"
    # Same source, other external id: another reference.
    no_description = {"source_name": DEFENDER, "external_id": "e-1"}
    three = ok(gql(emu, ADD_TWO, {"i0": status_ref("e-2"), "i1": no_description}))
    assert three["r0"]["id"] not in {one["r0"]["id"], one["r1"]["id"]}
    assert three["r1"] == two["r1"]  # no description given: unchanged
    assert len(emu.all_external_references()) == 3


# --------------------------------------------------------------------------- attach / detach


def test_attach_emits_one_update_touching_only_external_references(
    emu: OpenCTIEmulator,
) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.5"), score=70)
    ref = ok(gql(emu, ADD_TWO, {"i0": status_ref("a"), "i1": status_ref("b")}))["r0"]
    mark = len(emu.events())
    data = ok(gql(emu, ATTACH, attach_vars(a["id"], ref["id"])))
    assert data == {"a0": {"relationAdd": {"id": ref["id"]}}}

    [event] = events_since(emu, mark)
    assert event["event"] == "update"
    envelope = event["data"]
    assert envelope["type"] == "update"
    assert envelope["message"] == f"adds `{DEFENDER}` in `External references`"
    stix_ref = {"source_name": DEFENDER, "external_id": "a", "description": "deployed"}
    assert envelope["context"]["patch"] == [{"op": "add", "path": REF_PATH, "value": [stix_ref]}]
    assert envelope["context"]["reverse_patch"] == [{"op": "remove", "path": REF_PATH}]
    assert envelope["data"]["external_references"] == [stix_ref]
    assert ext(envelope["data"])["score"] == 70
    after = emu.indicator(a["id"])
    assert after is not None and after["updated_at"] >= a["updated_at"]
    assert ext(envelope["data"])["updated_at"] == after["updated_at"]

    # A second reference: the patch replaces the list, still on that one path.
    other = emu.attach_reference(a["id"], source_name="Analyst", url="https://ex.org/r")
    [second] = events_since(emu, mark + 1)
    patch = second["data"]["context"]["patch"]
    assert [op["path"] for op in patch] == [REF_PATH]
    assert patch[0]["op"] == "replace"
    assert [r["source_name"] for r in patch[0]["value"]] == [DEFENDER, "Analyst"]
    assert [r["id"] for r in emu.external_references(a["id"])] == [ref["id"], other["id"]]


def test_attaching_an_attached_reference_changes_nothing_and_emits_nothing(
    emu: OpenCTIEmulator,
) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.6"))
    ref = emu.attach_reference(a["id"], **status_ref("a"))
    before = emu.indicator(a["id"])
    mark = len(emu.events())
    data = ok(gql(emu, ATTACH, attach_vars(a["id"], ref["id"])))
    assert data == {"a0": {"relationAdd": {"id": ref["id"]}}}
    assert events_since(emu, mark) == []
    assert emu.indicator(a["id"]) == before


def test_attach_to_unknown_indicator_or_reference_is_an_error(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.7"))
    ref = emu.attach_reference(a["id"], **status_ref("a"))
    missing = "indicator--00000000-0000-4000-8000-000000000000"
    for variables in (attach_vars(missing, ref["id"]), attach_vars(a["id"], "no-such-ref")):
        answer = gql(emu, ATTACH, variables)
        assert answer["data"] == {"a0": None}
        assert answer["errors"][0]["path"] == ["a0"]
        assert answer["errors"][0]["extensions"]["code"] == "FUNCTIONAL_ERROR"


def test_detach_emits_one_update_and_detaching_again_nothing(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.8"))
    kept = emu.attach_reference(a["id"], source_name="Analyst", external_id="k")
    ref = emu.attach_reference(a["id"], **status_ref("a"))
    mark = len(emu.events())
    data = ok(gql(emu, DETACH, {"id0": a["id"], "t0": ref["id"]}))
    assert data == {"d0": {"relationDelete": {"id": a["id"]}}}
    [event] = events_since(emu, mark)
    assert event["event"] == "update"
    assert event["data"]["message"] == f"removes `{DEFENDER}` in `External references`"
    assert event["data"]["context"]["patch"] == [
        {
            "op": "replace",
            "path": REF_PATH,
            "value": [{"source_name": "Analyst", "external_id": "k"}],
        }
    ]
    assert [r["id"] for r in emu.external_references(a["id"])] == [kept["id"]]

    again = ok(gql(emu, DETACH, {"id0": a["id"], "t0": ref["id"]}))
    assert again == {"d0": {"relationDelete": {"id": a["id"]}}}
    assert emu.detach_reference(a["id"], ref["id"]) is False
    assert len(emu.events()) == mark + 1
    assert emu.detach_reference(a["id"], kept["id"]) is True
    last = emu.events()[-1]["data"]
    assert last["context"]["patch"] == [{"op": "remove", "path": REF_PATH}]
    assert "external_references" not in last["data"]  # empty: omitted like other fields


# --------------------------------------------------------------------------- patch / delete


def test_field_patch_updates_every_indicator_carrying_the_reference(
    emu: OpenCTIEmulator,
) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.9"))
    b = emu.create_indicator(pattern=ip("203.0.113.10"))
    ref = emu.attach_reference(a["id"], **status_ref("shared", "pending"))
    emu.attach_reference(b["id"], **status_ref("shared"))  # the upsert changes it: 2 events
    assert [e["data"]["data"]["name"] for e in emu.events()[-2:]] == [a["name"], b["name"]]

    mark = len(emu.events())
    edits = [{"key": "description", "value": ["failed"]}, {"key": "url", "value": []}]
    data = ok(gql(emu, PATCH, {"id": ref["id"], "input": edits}))
    assert data["p"]["fieldPatch"]["description"] == "failed"
    assert data["p"]["fieldPatch"]["id"] == ref["id"]
    events = events_since(emu, mark)
    assert sorted(ext(e["data"]["data"])["id"] for e in events) == sorted([a["id"], b["id"]])
    for event in events:
        assert event["event"] == "update"
        [op] = event["data"]["context"]["patch"]
        assert op["path"] == REF_PATH and op["value"][0]["description"] == "failed"

    # The same value again: nothing changes, no event.
    ok(gql(emu, PATCH, {"id": ref["id"], "input": edits}))
    assert len(emu.events()) == mark + 2
    wrong = gql(emu, PATCH, {"id": ref["id"], "input": [{"key": "score", "value": ["1"]}]})
    assert wrong["data"] == {"p": None}
    assert wrong["errors"][0]["path"] == ["p"]
    # The node rendering follows the change (its cache was dropped).
    nodes = ok(gql(emu, BY_IDS, {"filters": by_ids([a["id"]]), "first": 10}))
    [edge] = nodes["indicators"]["edges"][0]["node"]["externalReferences"]["edges"]
    assert edge["node"]["description"] == "failed"


def test_delete_detaches_the_reference_everywhere(emu: OpenCTIEmulator) -> None:
    a = emu.create_indicator(pattern=ip("203.0.113.11"))
    b = emu.create_indicator(pattern=ip("203.0.113.12"))
    ref = emu.attach_reference(a["id"], **status_ref("gone"))
    emu.attach_reference(b["id"], **status_ref("gone"))
    other = emu.attach_reference(b["id"], source_name="Analyst", external_id="stays")
    mark = len(emu.events())
    assert ok(gql(emu, DELETE, {"id": ref["id"]})) == {"x": {"delete": ref["id"]}}
    events = events_since(emu, mark)
    assert sorted(ext(e["data"]["data"])["id"] for e in events) == sorted([a["id"], b["id"]])
    assert all([op["path"] for op in e["data"]["context"]["patch"]] == [REF_PATH] for e in events)
    assert emu.external_references(a["id"]) == []
    assert [r["id"] for r in emu.external_references(b["id"])] == [other["id"]]
    assert [r["id"] for r in emu.all_external_references()] == [other["id"]]
    gone = gql(emu, DELETE, {"id": ref["id"]})
    assert gone["data"] == {"x": None} and gone["errors"][0]["path"] == ["x"]


# --------------------------------------------------------------------------- listings


def test_listing_by_ids_returns_external_references_and_revoked_ones() -> None:
    records = generate_indicators(40, seed=3)
    with OpenCTIEmulator(token=TOKEN) as emu:
        emu.load(records)
        revoked = emu.revoke_indicator(records[0]["id"])
        plain = records[1]
        ref = emu.attach_reference(revoked["id"], **status_ref("r"))
        ids = [revoked["standard_id"], plain["id"], "indicator--nothing"]
        data = ok(gql(emu, BY_IDS, {"filters": by_ids(ids), "first": 100}))
        nodes = {e["node"]["id"]: e["node"] for e in data["indicators"]["edges"]}
        assert set(nodes) == {revoked["id"], plain["id"]}
        assert nodes[revoked["id"]]["revoked"] is True
        [edge] = nodes[revoked["id"]]["externalReferences"]["edges"]
        shown = ("id", "source_name", "external_id", "url", "description")
        assert {k: edge["node"][k] for k in shown} == ref
        assert ref == {
            "id": ref["id"],
            "source_name": DEFENDER,
            "external_id": "r",
            "url": None,
            "description": "deployed",
        }
        assert edge["node"]["standard_id"].startswith("external-reference--")
        assert nodes[plain["id"]]["externalReferences"] == {"edges": []}
        # The STIX rendering (toStix) carries them too.
        to_stix = """query I($id: String!) { indicator(id: $id) { toStix } }"""
        stix = ok(gql(emu, to_stix, {"id": revoked["id"]}))["indicator"]["toStix"]
        assert '"external_references": [{"source_name": "Microsoft Defender for Endpoint"' in stix


def test_generated_population_records_take_attachments() -> None:
    with OpenCTIEmulator(token=TOKEN) as emu:
        emu.load_generated(5000, seed=4)
        pop = emu._store.population
        assert pop is not None
        internal, standard = pop.internal_id(17), pop.standard_id(42)
        refs = ok(gql(emu, ADD_TWO, {"i0": status_ref("g1"), "i1": status_ref("g2")}))
        attach_two = """mutation A($id0: ID!, $in0: StixRefRelationshipAddInput!,
            $id1: ID!, $in1: StixRefRelationshipAddInput!) {
          a0: stixDomainObjectEdit(id: $id0) { relationAdd(input: $in0) { id } }
          a1: stixDomainObjectEdit(id: $id1) { relationAdd(input: $in1) { id } }
        }"""
        variables = {
            **attach_vars(internal, refs["r0"]["id"]),
            "id1": standard,
            "in1": {"toId": refs["r1"]["id"], "relationship_type": "external-reference"},
        }
        ok(gql(emu, attach_two, variables))
        assert emu.count() == 5000  # changed, not added
        events = emu.events()
        assert [e["event"] for e in events] == ["update", "update"]
        assert [ext(e["data"]["data"])["id"] for e in events] == [internal, pop.internal_id(42)]
        data = ok(gql(emu, BY_IDS, {"filters": by_ids([internal, standard]), "first": 10}))
        got = {
            e["node"]["id"]: [
                r["node"]["external_id"] for r in e["node"]["externalReferences"]["edges"]
            ]
            for e in data["indicators"]["edges"]
        }
        assert got == {internal: ["g1"], pop.internal_id(42): ["g2"]}
        assert [r["external_id"] for r in emu.external_references(standard)] == ["g2"]
        assert emu.detach_reference(internal, refs["r0"]["id"]) is True
        assert emu.external_references(internal) == []
