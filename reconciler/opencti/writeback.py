"""The OpenCTI side of the write-back: reading our external references on indicators and
editing them, in batches (``ReferenceStore`` of ``reconciler.writeback``).

Reads: ``indicators`` filtered by ids alone (not the stream's filters: a reference must be
removable from an indicator that left the stream), our references picked by ``source_name``.
Writes: one GraphQL document carries up to ``batch`` aliased root mutations
(``externalReferenceAdd``, ``stixDomainObjectEdit { relationAdd | relationDelete }``,
``externalReferenceEdit { fieldPatch | delete }``), paced by a calls-per-minute budget. A
document the platform answers with an error is sent again one mutation per document, so one bad
item fails alone. Order per run: create and attach, patch, then detach and delete, so an
indicator never shows no status between two.

Must not decide what to write (``reconciler.writeback`` does) nor touch Defender.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reconciler.clock import Clock
from reconciler.errors import SourceError
from reconciler.opencti.mutations import Mutations, Op, attach_reference
from reconciler.opencti.source import OpenCTISource
from reconciler.writeback import (
    Attached,
    Edits,
    Readback,
    Reference,
    StoreOutcome,
    restamp_row,
)

__all__ = ["OpenCTIReferences"]

_READ = """query WriteBackReferences($filters: FilterGroup, $first: Int, $after: ID) {
  indicators(filters: $filters, first: $first, after: $after) {
    edges { node { id updated_at externalReferences {
      edges { node { id source_name external_id url description } } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""

_STAMPS = """query WriteBackStamps($filters: FilterGroup, $first: Int, $after: ID) {
  indicators(filters: $filters, first: $first, after: $after) {
    edges { node { id updated_at } }
    pageInfo { hasNextPage endCursor }
  }
}"""


class OpenCTIReferences:
    """``ReferenceStore`` over the platform's GraphQL API (through ``OpenCTISource``'s client)."""

    def __init__(
        self,
        source: OpenCTISource,
        source_name: str,
        *,
        batch: int = 100,
        calls_per_minute: int = 1200,
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self.source_name = source_name
        self.mutations = Mutations(
            source, batch=batch, calls_per_minute=calls_per_minute, clock=clock
        )

    # -- reading ------------------------------------------------------------------------
    def read(self, opencti_ids: Sequence[str]) -> Readback:
        nodes, calls = self._nodes(opencti_ids, _READ)
        back = Readback(calls=calls)
        for node in nodes:
            ident = str(node.get("id"))
            back.refs[ident] = self._ours(node)
            if isinstance(node.get("updated_at"), str):
                back.stamps[ident] = node["updated_at"]
                restamp_row(node)
                if node["updated_at"] != back.stamps[ident]:
                    back.bases[ident] = node["updated_at"]
        return back

    def stamps(self, opencti_ids: Sequence[str]) -> tuple[dict[str, str], int]:
        nodes, calls = self._nodes(opencti_ids, _STAMPS)
        found = {
            str(node.get("id")): node["updated_at"]
            for node in nodes
            if isinstance(node.get("updated_at"), str)
        }
        return found, calls

    def _nodes(self, opencti_ids: Sequence[str], query: str) -> tuple[list[dict[str, Any]], int]:
        """The indicator nodes of ``opencti_ids`` (by any of their ids), every page; and the
        calls it took."""
        nodes: list[dict[str, Any]] = []
        calls = 0
        filters = {
            "mode": "and",
            "filters": [
                {"key": ["ids"], "values": list(opencti_ids), "operator": "eq", "mode": "or"}
            ],
            "filterGroups": [],
        }
        after: str | None = None
        while True:
            variables = {"filters": filters, "first": 500, "after": after}
            result = self.source.graphql(query, variables, "write-back read")
            calls += 1
            listing = (result.get("data") or {}).get("indicators")
            if not isinstance(listing, dict):
                raise SourceError("OpenCTI answered no indicators to the write-back's read")
            nodes.extend(edge.get("node") or {} for edge in listing.get("edges") or [])
            info = listing.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                break
            after = str(info["endCursor"])
        return nodes, calls

    def _ours(self, node: dict[str, Any]) -> list[Attached]:
        refs = node.get("externalReferences") or {}
        edges = refs.get("edges") if isinstance(refs, dict) else refs
        out = []
        for edge in edges or []:
            ref = edge.get("node", edge) if isinstance(edge, dict) else None
            if isinstance(ref, dict) and ref.get("source_name") == self.source_name:
                out.append(
                    Attached(
                        str(ref.get("id")),
                        ref.get("external_id"),
                        ref.get("url"),
                        ref.get("description"),
                    )
                )
        return out

    # -- writing ------------------------------------------------------------------------
    def write(self, edits: Edits) -> StoreOutcome:
        calls_before = self.mutations.calls
        outcome = StoreOutcome()
        run = self.mutations.run
        creates = [_add(self.source_name, ref, oid) for oid, ref in edits.attach]
        answers = run(creates, outcome.failed)
        made = [
            (oid, str(answer["id"]))
            for (oid, _), answer in zip(edits.attach, answers, strict=True)
            if isinstance(answer, dict) and answer.get("id")
        ]
        attached = run([attach_reference(oid, ref, oid) for oid, ref in made], outcome.failed)
        for (oid, ref), answer in zip(made, attached, strict=True):
            if answer is not None:
                outcome.attached.setdefault(oid, []).append(ref)
        run([_patch(ref_id, ref, oid) for oid, ref_id, ref in edits.patch], outcome.failed)
        run([_detach(oid, ref_id) for oid, ref_id, _ in edits.detach], outcome.failed)
        deletes = [_delete(ref_id, oid) for oid, ref_id, delete in edits.detach if delete]
        run(deletes, outcome.failed)
        outcome.calls = self.mutations.calls - calls_before
        return outcome


def _add(source_name: str, ref: Reference, oid: str) -> Op:
    spec: dict[str, Any] = {
        "source_name": source_name,
        "external_id": ref.external_id,
        "description": ref.description,
    }
    if ref.url:
        spec["url"] = ref.url
    return Op(
        "@a: externalReferenceAdd(input: $@vinput) { id }",
        {"input": ("ExternalReferenceAddInput!", spec)},
        oid,
    )


def _patch(ref_id: str, ref: Reference, oid: str) -> Op:
    return Op(
        "@a: externalReferenceEdit(id: $@vid) { fieldPatch(input: $@vinput) { id } }",
        {
            "id": ("ID!", ref_id),
            "input": (
                "[EditInput]!",
                [
                    {"key": "description", "value": [ref.description]},
                    {"key": "url", "value": [ref.url] if ref.url else []},
                ],
            ),
        },
        oid,
    )


def _detach(oid: str, ref_id: str) -> Op:
    return Op(
        "@a: stixDomainObjectEdit(id: $@vid) "
        '{ relationDelete(toId: $@vto, relationship_type: "external-reference") { id } }',
        {"id": ("ID!", oid), "to": ("StixRef!", ref_id)},
        oid,
    )


def _delete(ref_id: str, oid: str) -> Op:
    return Op("@a: externalReferenceEdit(id: $@vid) { delete }", {"id": ("ID!", ref_id)}, oid)
