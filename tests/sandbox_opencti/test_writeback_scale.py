"""Write-back at scale on a generated population: 15,000 indicators each get an external
reference through aliased documents of 100 root fields, and listing those 15,000 indicators
(with ``externalReferences``) stays about as fast as before. The bounds are generous."""

from __future__ import annotations

import time
from typing import Any

import requests

from reconciler.sandbox.opencti import OpenCTIEmulator

from .conftest import TOKEN, WAIT

N = 200_000
ATTACHED = 15_000
PAGE = 5000
LIST = """query L($first: Int, $after: ID) {
  indicators(first: $first, after: $after, orderBy: x_opencti_score, orderMode: desc) {
    edges { node { id updated_at externalReferences { edges { node { id external_id } } } } }
    pageInfo { endCursor }
  }
}"""


def post(emu: OpenCTIEmulator, query: str, variables: dict[str, Any]) -> Any:
    response = requests.post(
        f"{emu.url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=WAIT,
    )
    answer = response.json()
    assert "errors" not in answer, answer["errors"][:2]
    return answer["data"]


def list_top(emu: OpenCTIEmulator) -> tuple[float, list[dict[str, Any]]]:
    """Seconds to list the top ``ATTACHED`` indicators by score, and their nodes."""
    started = time.perf_counter()
    nodes: list[dict[str, Any]] = []
    after = None
    while len(nodes) < ATTACHED:
        page = post(emu, LIST, {"first": PAGE, "after": after})["indicators"]
        nodes += [edge["node"] for edge in page["edges"]]
        after = page["pageInfo"]["endCursor"]
    return time.perf_counter() - started, nodes


def attach_document(count: int) -> str:
    declared = ", ".join(f"$id{i}: ID!, $in{i}: StixRefRelationshipAddInput!" for i in range(count))
    fields = "\n".join(
        f"a{i}: stixDomainObjectEdit(id: $id{i}) {{ relationAdd(input: $in{i}) {{ id }} }}"
        for i in range(count)
    )
    return f"mutation Attach({declared}) {{\n{fields}\n}}"


def test_fifteen_thousand_attachments_keep_listing_fast() -> None:
    with OpenCTIEmulator(token=TOKEN) as emu:
        emu.load_generated(N, seed=9)
        list_top(emu)  # builds the population's score order once
        before, nodes = list_top(emu)
        assert all(node["externalReferences"] == {"edges": []} for node in nodes)

        add = (
            "mutation($i: ExternalReferenceAddInput!) { r: externalReferenceAdd(input: $i) { id } }"
        )
        ref = post(emu, add, {"i": {"source_name": "Defender", "external_id": "deployed"}})["r"]
        link = {"toId": ref["id"], "relationship_type": "external-reference"}
        document = attach_document(100)
        ids = [node["id"] for node in nodes]
        for start in range(0, len(ids), 100):
            variables: dict[str, Any] = {}
            for i, indicator in enumerate(ids[start : start + 100]):
                variables[f"id{i}"] = indicator
                variables[f"in{i}"] = link
            data = post(emu, document, variables)
            assert len(data) == 100
        assert emu.mutation_count("stixDomainObjectEdit") == ATTACHED
        assert len(emu.events()) == ATTACHED
        assert emu.count() == N

        after_change, listed = list_top(emu)
        again, _ = list_top(emu)
        assert [node["id"] for node in listed] == ids  # same rows, same order
        assert all(
            [e["node"]["id"] for e in node["externalReferences"]["edges"]] == [ref["id"]]
            for node in listed
        )
        assert after_change < 2 * before + 2.0, (before, after_change)
        assert again < 2 * before + 1.0, (before, again)
