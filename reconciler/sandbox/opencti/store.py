"""The record store of the fake OpenCTI: records by internal id, rendered JSON, listings.

Owns the record keys (see ``reconciler.sandbox.dataset``; ``stix_ids``, the entity's other STIX
ids, is optional), new and changed records made through the emulator, and caches that keep
large listings cheap: each record's rendered node (per selection) and STIX JSON, and each
filtered, sorted listing; a change to a record drops what it touched. The store does not lock:
callers hold the emulator's condition.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.sandbox.dataset import observables_from_pattern
from reconciler.sandbox.opencti.core import FilterGroup, Record
from reconciler.sandbox.opencti.filters import compile_group
from reconciler.sandbox.opencti.render import graphql_node, stix_object

# Aliases accepted by create/update_indicator for record keys.
FIELD_ALIASES = {
    "x_opencti_score": "score",
    "x_opencti_detection": "detection",
    "x_opencti_main_observable_type": "main_observable_type",
    "x_opencti_stix_ids": "stix_ids",
}
RECORD_KEYS = frozenset(
    [
        "id",
        "standard_id",
        "stix_ids",
        "name",
        "description",
        "pattern_type",
        "pattern",
        "pattern_version",
        "main_observable_type",
        "observable_values",
        "score",
        "detection",
        "confidence",
        "labels",
        "revoked",
        "valid_from",
        "valid_until",
        "indicator_types",
        "created",
        "modified",
        "created_at",
        "updated_at",
        "created_by",
        "markings",
    ]
)


def normalise(fields: dict[str, Any]) -> dict[str, Any]:
    """Record keys of ``create/update_indicator`` arguments; ValueError on an unknown one."""
    out = {FIELD_ALIASES.get(k, k): v for k, v in fields.items()}
    unknown = set(out) - RECORD_KEYS
    if unknown:
        raise ValueError(f"unknown indicator fields: {sorted(unknown)}")
    return out


def new_record(fields: dict[str, Any], now: str, rng: random.Random) -> Record:
    """A record created at ``now`` from normalised fields (``pattern`` given): defaults first."""
    observables = observables_from_pattern(fields["pattern"])
    first = observables[0] if observables else {}
    record: Record = {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "standard_id": "indicator--" + str(uuid.UUID(int=rng.getrandbits(128))),
        "name": first.get("value") or fields["pattern"][:64],
        "description": "",
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "main_observable_type": first.get("type"),
        "observable_values": observables,
        "score": 50,
        "detection": True,
        "confidence": 80,
        "labels": [],
        "revoked": False,
        "valid_from": now,
        "valid_until": None,
        "indicator_types": ["malicious-activity"],
        "created": now,
        "modified": now,
        "created_at": now,
        "updated_at": now,
        "created_by": None,
        "markings": [],
    }
    record.update(fields)
    return record


def changed_record(before: Record, fields: dict[str, Any], now: str) -> Record:
    """``before`` with normalised fields applied, observables re-derived from a new pattern."""
    after = dict(before)
    after.update(fields)
    if "pattern" in fields and "observable_values" not in fields:
        after["observable_values"] = observables_from_pattern(fields["pattern"])
        if after["observable_values"] and "main_observable_type" not in fields:
            after["main_observable_type"] = after["observable_values"][0]["type"]
    after["updated_at"] = after["modified"] = now
    return after


@dataclass
class Listing:
    """Matching ids in sort order, each id's position, and the sort keys (cursors)."""

    ids: list[str]
    index: dict[str, int]
    sort_keys: list[tuple[Any, ...]]


def _sort_value(value: Any) -> tuple[int, Any]:
    # Nulls first, then by value; the tuple keeps mixed None/int comparable.
    return (0, "") if value is None else (1, value)


class RecordStore:
    """Records by internal id with rendering and listing caches."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        # Rendered node JSON by selected top-level fields (None = all), then by indicator id.
        self._node_cache: dict[frozenset[str] | None, dict[str, str]] = {}
        self._stix_cache: dict[str, str] = {}
        self._listing_cache: dict[tuple[str, str, str, bool], Listing] = {}

    def load(self, records: Iterable[Record]) -> None:
        for record in records:
            self.put(dict(record))

    def get(self, indicator_id: str) -> Record | None:
        return self.records.get(indicator_id)

    def put(self, record: Record) -> None:
        self.records[record["id"]] = record
        self._invalidate(record["id"])

    def remove(self, indicator_id: str) -> tuple[Record, str] | None:
        """Drop a record; return it with its last STIX JSON (None when there is none)."""
        record = self.records.pop(indicator_id, None)
        if record is None:
            return None
        stix = self.stix_json(record)
        self._invalidate(indicator_id)
        return record, stix

    def _invalidate(self, indicator_id: str) -> None:
        for cache in self._node_cache.values():
            cache.pop(indicator_id, None)
        self._stix_cache.pop(indicator_id, None)
        self._listing_cache.clear()

    def node_json(self, record: Record, fields: frozenset[str] | None = None) -> str:
        """The GraphQL node as JSON, projected on ``fields`` (``toStix`` alone: the STIX)."""
        cache = self._node_cache.setdefault(fields, {})
        text = cache.get(record["id"])
        if text is None:
            node: dict[str, Any]
            if fields is not None and "toStix" in fields:
                node = {"toStix": self.stix_json(record)}
            else:
                node = graphql_node(record)
                if fields is not None:
                    node = {k: v for k, v in node.items() if k in fields}
            text = json.dumps(node, ensure_ascii=False)
            cache[record["id"]] = text
        return text

    def stix_json(self, record: Record) -> str:
        text = self._stix_cache.get(record["id"])
        if text is None:
            text = json.dumps(stix_object(record), ensure_ascii=False)
            self._stix_cache[record["id"]] = text
        return text

    def listing(
        self, filters: FilterGroup | None, needle: str, sort_field: str, descending: bool
    ) -> Listing:
        """Records matching ``filters`` and the lower-case ``needle`` (name or pattern), sorted
        by ``sort_field`` then id; GraphQLError for an unknown filter key or operator."""
        cache_key = (json.dumps(filters, sort_keys=True), needle, sort_field, descending)
        cached = self._listing_cache.get(cache_key)
        if cached is not None:
            return cached
        matches = compile_group(filters)
        keyed = [
            (_sort_value(r.get(sort_field)), r["id"])
            for r in self.records.values()
            if matches(r) and (not needle or needle in f"{r['name']} {r['pattern']}".lower())
        ]
        keyed.sort(reverse=descending)
        ids = [k[1] for k in keyed]
        listing = Listing(ids, {i: n for n, i in enumerate(ids)}, keyed)
        self._listing_cache[cache_key] = listing
        return listing
