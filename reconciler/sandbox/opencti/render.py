"""Renderings: the GraphQL ``Indicator`` node, the STIX 2.1 indicator, and the objects around
indicators (external references, sightings) in both shapes.

Owns the shapes the fake answers with: the GraphQL node (full, like pycti's default selection,
or only the top-level fields a query selected; ``status`` is the workflow status with its
template, or null; ``externalReferences`` the attached references as a connection) and the
STIX object of stream events and ``toStix`` (null and empty fields omitted, OpenCTI's extension
included, the status as its ``workflow_id``, attached references as ``external_references``);
a sighting's GraphQL node and STIX ``sighting``. Attached references are ids on the record,
rendered from the references mapping a caller passes (unknown ids are left out). Must not
choose, filter or order records.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.opencti.core import (
    CREATOR_ID,
    NAMESPACE,
    PARENT_TYPES,
    STATUSES,
    STIX_EXT_OCTI,
    TLP,
    Record,
    author_id,
    marking_id,
    uuid5,
)

#: External references by internal id, as rendering looks attached ones up (None: none).
Refs = Mapping[str, Record] | None


@functools.lru_cache(maxsize=4096)
def _label_color(value: str) -> str:
    return "#" + uuid.uuid5(NAMESPACE, "color:" + value).hex[:6]


def compact(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop null and empty fields, as OpenCTI's STIX converter does."""
    return {k: v for k, v in obj.items() if v is not None and v != "" and v != [] and v != {}}


def _observable_values(record: Record) -> list[dict[str, Any]] | None:
    out = []
    for ov in record.get("observable_values") or []:
        hashes = ov.get("hashes")
        pairs = [{"algorithm": a, "hash": h} for a, h in hashes.items()] if hashes else None
        out.append({"type": ov["type"], "value": ov.get("value"), "hashes": pairs})
    return out or None


def _observables(record: Record) -> dict[str, Any]:
    edges = []
    for ov in record.get("observable_values") or []:
        shown = ov.get("value") or next(iter((ov.get("hashes") or {}).values()), "")
        node = {
            "id": uuid5("observable", f"{ov['type']}:{shown}"),
            "entity_type": ov["type"],
            "observable_value": shown,
        }
        edges.append({"node": node})
    return {"edges": edges}


def _author(record: Record) -> dict[str, Any] | None:
    author = record.get("created_by")
    if not author:
        return None
    return {
        "id": author_id(author),
        "standard_id": "identity--" + author_id(author),
        "entity_type": "Organization",
        "name": author,
        "identity_class": "organization",
    }


def _markings(record: Record) -> list[dict[str, Any]]:
    return [
        {
            "id": marking_id(name),
            "standard_id": TLP[name][0],
            "entity_type": "Marking-Definition",
            "definition_type": "TLP",
            "definition": name,
            "x_opencti_color": TLP[name][1],
            "x_opencti_order": TLP[name][2],
        }
        for name in record.get("markings") or []
    ]


def _field(name: str) -> Callable[[Record], Any]:
    return lambda record: record.get(name)


# GraphQL node fields in pycti's order, each made from the record.
_NODE: dict[str, Callable[[Record], Any]] = {
    "id": _field("id"),
    "standard_id": _field("standard_id"),
    "entity_type": lambda record: "Indicator",
    "parent_types": lambda record: list(PARENT_TYPES[1:]),
    "spec_version": lambda record: "2.1",
    "created_at": _field("created_at"),
    "updated_at": _field("updated_at"),
    "createdBy": _author,
    "creators": lambda record: [{"id": CREATOR_ID, "name": "admin"}],
    "objectMarking": _markings,
    "objectLabel": lambda record: [
        {"id": label_id(v), "value": v, "color": _label_color(v)}
        for v in record.get("labels") or []
    ],
    "externalReferences": lambda record: {"edges": []},
    "killChainPhases": lambda record: [],
    "revoked": lambda record: bool(record.get("revoked")),
    "confidence": _field("confidence"),
    "created": _field("created"),
    "modified": _field("modified"),
    "pattern_type": _field("pattern_type"),
    "pattern_version": _field("pattern_version"),
    "pattern": _field("pattern"),
    "name": _field("name"),
    "description": lambda record: record.get("description") or None,
    "indicator_types": lambda record: list(record.get("indicator_types") or []) or None,
    "valid_from": _field("valid_from"),
    "valid_until": _field("valid_until"),
    "x_opencti_score": _field("score"),
    "x_opencti_detection": lambda record: bool(record.get("detection")),
    "x_opencti_main_observable_type": _field("main_observable_type"),
    "x_opencti_observable_values": _observable_values,
    "x_mitre_platforms": lambda record: None,
    "observables": _observables,
    "status": lambda record: _status(record),
    "workflowEnabled": lambda record: True,
}


def graphql_node(
    record: Record, fields: frozenset[str] | None = None, references: Refs = None
) -> dict[str, Any]:
    """The record as the GraphQL ``Indicator`` node: full (pycti's default selection), or only
    the top-level ``fields`` a query selected (unknown ones are left out); attached external
    references are looked up in ``references``."""
    if fields is None:
        node = {name: make(record) for name, make in _NODE.items()}
    else:
        node = {name: make(record) for name, make in _NODE.items() if name in fields}
    if "externalReferences" in node:
        node["externalReferences"] = reference_edges(record, references)
    return node


# --------------------------------------------------------------------------- external references


def _attached(record: Record, references: Refs) -> list[Record]:
    ids = record.get("external_references") or []
    if not ids or not references:
        return []
    return [ref for ref in (references.get(i) for i in ids) if ref is not None]


def reference_node(ref: Record) -> dict[str, Any]:
    """An external reference as a GraphQL ``ExternalReference`` node."""
    return {
        "id": ref["id"],
        "standard_id": ref["standard_id"],
        "entity_type": "External-Reference",
        "source_name": ref.get("source_name"),
        "description": ref.get("description"),
        "url": ref.get("url"),
        "hash": None,
        "external_id": ref.get("external_id"),
        "created": ref.get("created_at"),
        "modified": ref.get("updated_at"),
    }


def reference_edges(record: Record, references: Refs) -> dict[str, Any]:
    """The ``externalReferences`` connection of a record (indicator or sighting)."""
    return {"edges": [{"node": reference_node(ref)} for ref in _attached(record, references)]}


def stix_references(record: Record, references: Refs) -> list[dict[str, Any]]:
    """The STIX ``external_references`` of a record (empty fields omitted)."""
    return [
        compact(
            {
                "source_name": ref.get("source_name"),
                "description": ref.get("description"),
                "url": ref.get("url"),
                "external_id": ref.get("external_id"),
            }
        )
        for ref in _attached(record, references)
    ]


def _status(record: Record) -> dict[str, Any] | None:
    status = STATUSES.get(record.get("status_id") or "")
    return status.graphql() if status else None


def stix_object(record: Record, references: Refs = None) -> dict[str, Any]:
    """The record as the STIX 2.1 indicator of stream events (null and empty fields omitted);
    attached external references are looked up in ``references``."""
    author = record.get("created_by")
    labels = list(record.get("labels") or [])
    extension = compact(
        {
            "extension_type": "property-extension",
            "id": record["id"],
            "type": "Indicator",
            "created_at": record["created_at"],
            "updated_at": record["updated_at"],
            "is_inferred": False,
            "creator_ids": [CREATOR_ID],
            "labels_ids": [label_id(v) for v in labels],
            "created_by_ref_id": author_id(author) if author else None,
            "score": record.get("score"),
            "detection": bool(record.get("detection")),
            "main_observable_type": record.get("main_observable_type"),
            "observable_values": [dict(ov) for ov in record.get("observable_values") or []],
            "stix_ids": list(record.get("stix_ids") or []),
            "workflow_id": record.get("status_id"),
        }
    )
    return compact(
        {
            "id": record["standard_id"],
            "spec_version": "2.1",
            "type": "indicator",
            "created": record.get("created"),
            "modified": record.get("modified"),
            "revoked": bool(record.get("revoked")),
            "confidence": record.get("confidence"),
            "lang": "en",
            "labels": labels,
            "object_marking_refs": [TLP[m][0] for m in record.get("markings") or []],
            "created_by_ref": "identity--" + author_id(author) if author else None,
            "name": record.get("name"),
            "description": record.get("description"),
            "indicator_types": list(record.get("indicator_types") or []),
            "pattern": record.get("pattern"),
            "pattern_type": record.get("pattern_type"),
            "pattern_version": record.get("pattern_version"),
            "valid_from": record.get("valid_from"),
            "valid_until": record.get("valid_until"),
            "external_references": stix_references(record, references),
            "extensions": {STIX_EXT_OCTI: extension},
        }
    )


# --------------------------------------------------------------------------- sightings


def sighting_node(sighting: Record, references: Refs) -> dict[str, Any]:
    """A sighting as a GraphQL ``StixSightingRelationship`` node."""
    return {
        "id": sighting["id"],
        "standard_id": sighting["standard_id"],
        "entity_type": "stix-sighting-relationship",
        "parent_types": ["basic-relationship", "stix-relationship"],
        "created_at": sighting["created_at"],
        "updated_at": sighting["updated_at"],
        "created": sighting["created"],
        "modified": sighting["modified"],
        "confidence": sighting.get("confidence"),
        "description": sighting.get("description"),
        "attribute_count": sighting["attribute_count"],
        "first_seen": sighting["first_seen"],
        "last_seen": sighting["last_seen"],
        "x_opencti_negative": bool(sighting.get("negative")),
        "createdBy": None,
        "objectMarking": [],
        "objectLabel": [],
        "externalReferences": reference_edges(sighting, references),
        "from": {
            "id": sighting["from_id"],
            "standard_id": sighting["from_standard_id"],
            "entity_type": "Indicator",
            "name": sighting.get("from_name"),
        },
        "to": {
            "id": sighting["to_id"],
            "standard_id": sighting["to_standard_id"],
            "entity_type": sighting["to_type"],
            "name": sighting.get("to_name"),
        },
    }


def sighting_stix(sighting: Record, references: Refs) -> dict[str, Any]:
    """A sighting as the STIX 2.1 ``sighting`` of stream events (empty fields omitted)."""
    extension = compact(
        {
            "extension_type": "property-extension",
            "id": sighting["id"],
            "type": "stix-sighting-relationship",
            "created_at": sighting["created_at"],
            "updated_at": sighting["updated_at"],
            "is_inferred": False,
            "creator_ids": [CREATOR_ID],
            "negative": bool(sighting.get("negative")),
            "sighting_of_ref": sighting["from_id"],
            "sighting_of_type": "Indicator",
            "where_sighted_refs": [sighting["to_id"]],
            "where_sighted_types": [sighting["to_type"]],
        }
    )
    return compact(
        {
            "id": sighting["standard_id"],
            "spec_version": "2.1",
            "type": "sighting",
            "created": sighting["created"],
            "modified": sighting["modified"],
            "confidence": sighting.get("confidence"),
            "description": sighting.get("description"),
            "first_seen": sighting["first_seen"],
            "last_seen": sighting["last_seen"],
            "count": sighting["attribute_count"],
            "sighting_of_ref": sighting["from_standard_id"],
            "where_sighted_refs": [sighting["to_standard_id"]],
            "external_references": stix_references(sighting, references),
            "extensions": {STIX_EXT_OCTI: extension},
        }
    )
