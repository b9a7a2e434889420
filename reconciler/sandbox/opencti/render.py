"""Renderings of a record: the GraphQL ``Indicator`` node and the STIX 2.1 indicator.

Owns both shapes the fake answers with: the GraphQL node (full, like pycti's default selection;
a query's selection is projected from it by the store) and the STIX object of stream events and
``toStix`` (null and empty fields omitted, OpenCTI's extension included).
"""

from __future__ import annotations

import uuid
from typing import Any

from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.opencti.core import (
    CREATOR_ID,
    NAMESPACE,
    PARENT_TYPES,
    STIX_EXT_OCTI,
    TLP,
    Record,
    author_id,
    marking_id,
    uuid5,
)


def _label_color(value: str) -> str:
    return "#" + uuid.uuid5(NAMESPACE, "color:" + value).hex[:6]


def compact(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop null and empty fields, as OpenCTI's STIX converter does."""
    return {k: v for k, v in obj.items() if v is not None and v != "" and v != [] and v != {}}


def graphql_node(record: Record) -> dict[str, Any]:
    """The record as the GraphQL ``Indicator`` node (full, like pycti's default selection)."""
    author = record.get("created_by")
    observable_values = []
    observables = []
    for ov in record.get("observable_values") or []:
        hashes = ov.get("hashes")
        observable_values.append(
            {
                "type": ov["type"],
                "value": ov.get("value"),
                "hashes": (
                    [{"algorithm": a, "hash": h} for a, h in hashes.items()] if hashes else None
                ),
            }
        )
        shown = ov.get("value") or next(iter((hashes or {}).values()), "")
        observables.append(
            {
                "node": {
                    "id": uuid5("observable", f"{ov['type']}:{shown}"),
                    "entity_type": ov["type"],
                    "observable_value": shown,
                }
            }
        )
    return {
        "id": record["id"],
        "standard_id": record["standard_id"],
        "entity_type": "Indicator",
        "parent_types": list(PARENT_TYPES[1:]),
        "spec_version": "2.1",
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
        "createdBy": (
            {
                "id": author_id(author),
                "standard_id": "identity--" + author_id(author),
                "entity_type": "Organization",
                "name": author,
                "identity_class": "organization",
            }
            if author
            else None
        ),
        "creators": [{"id": CREATOR_ID, "name": "admin"}],
        "objectMarking": [
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
        ],
        "objectLabel": [
            {"id": label_id(v), "value": v, "color": _label_color(v)}
            for v in record.get("labels") or []
        ],
        "externalReferences": {"edges": []},
        "killChainPhases": [],
        "revoked": bool(record.get("revoked")),
        "confidence": record.get("confidence"),
        "created": record.get("created"),
        "modified": record.get("modified"),
        "pattern_type": record.get("pattern_type"),
        "pattern_version": record.get("pattern_version"),
        "pattern": record.get("pattern"),
        "name": record.get("name"),
        "description": record.get("description") or None,
        "indicator_types": list(record.get("indicator_types") or []) or None,
        "valid_from": record.get("valid_from"),
        "valid_until": record.get("valid_until"),
        "x_opencti_score": record.get("score"),
        "x_opencti_detection": bool(record.get("detection")),
        "x_opencti_main_observable_type": record.get("main_observable_type"),
        "x_opencti_observable_values": observable_values or None,
        "x_mitre_platforms": None,
        "observables": {"edges": observables},
    }


def stix_object(record: Record) -> dict[str, Any]:
    """The record as the STIX 2.1 indicator of stream events (null and empty fields omitted)."""
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
            "extensions": {STIX_EXT_OCTI: extension},
        }
    )
