"""The record store of the fake OpenCTI: explicit records over an optional generated population.

Owns the record keys (see ``reconciler.sandbox.dataset``; ``stix_ids``, the entity's other STIX
ids, ``status_id``, its workflow status, and ``external_references``, the ids of its attached
external references in attachment order, are optional; the last is set by attachments only),
new and changed records made through the emulator, a generated population underneath
(``population``: indices overridden by a change or a deletion are hidden, their new version
lives with the explicit records; generated records have no attachments), the external
references themselves (``entities.References``) with which indicators each one is attached to,
finding an indicator by any of its ids, and the caches that keep large listings cheap: each
explicit record's rendered node (per selection) and STIX JSON (generated ones render on demand),
each explicit listing (dropped on any change) and each population mask (kept: the population
never changes; hidden indices are applied per request). Must not lock (callers hold the
emulator's condition) nor know about GraphQL, HTTP or events.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.sandbox.dataset import observables_from_pattern
from reconciler.sandbox.opencti.core import STATUS_BY_NAME, STATUSES, FilterGroup, Record
from reconciler.sandbox.opencti.entities import References
from reconciler.sandbox.opencti.filters import compile_filters, predicate
from reconciler.sandbox.opencti.listing import Listing, PopulationOrder, Sort, SortKey
from reconciler.sandbox.opencti.population import Population, mask_and, mask_not
from reconciler.sandbox.opencti.render import graphql_node, stix_object

# Aliases accepted by create/update_indicator for record keys.
FIELD_ALIASES = {
    "x_opencti_score": "score",
    "x_opencti_detection": "detection",
    "x_opencti_main_observable_type": "main_observable_type",
    "x_opencti_stix_ids": "stix_ids",
    "x_opencti_workflow_id": "status_id",
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
        "status_id",
    ]
)
_MASK_CACHE_SIZE = 8


def normalise(fields: dict[str, Any]) -> dict[str, Any]:
    """Record keys of ``create/update_indicator`` arguments; ValueError on an unknown one. A
    status is given by status id or template name (``APPROVED``), or None for no status."""
    out = {FIELD_ALIASES.get(k, k): v for k, v in fields.items()}
    unknown = set(out) - RECORD_KEYS
    if unknown:
        raise ValueError(f"unknown indicator fields: {sorted(unknown)}")
    status = out.get("status_id")
    if status is not None:
        status = STATUS_BY_NAME.get(str(status), status)
        if status not in STATUSES:
            raise ValueError(f"unknown workflow status {out['status_id']!r}")
        out["status_id"] = status
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
        "status_id": None,
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
class _Masks:
    """A population mask in one listing order: as computed, and with hidden indices applied."""

    order: PopulationOrder
    base: bytes
    version: int = -1
    visible: bytes = b""


class RecordStore:
    """Explicit records by internal id over an optional population, with caches."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.population: Population | None = None
        self._hidden = bytearray()  # 1 where a generated index was changed or deleted
        #: The records the last read by ids found (generated ones included), by internal id.
        self._by_id_rows: dict[str, Record] = {}
        self._version = 0
        # Rendered node JSON by selected top-level fields (None = all), then by indicator id.
        self._node_cache: dict[frozenset[str] | None, dict[str, str]] = {}
        self._stix_cache: dict[str, str] = {}
        self._listing_cache: dict[tuple[str, str, Sort], tuple[list[SortKey], list[str]]] = {}
        self._orders: dict[Sort, PopulationOrder] = {}
        self._masks: OrderedDict[tuple[str, str, Sort], _Masks] = OrderedDict()
        self.references = References()
        # Explicit records by attached external reference id, and by their other ids.
        self._attached: dict[str, dict[str, None]] = {}
        self._aliases: dict[str, str] = {}

    # --- records ------------------------------------------------------------------------------

    def load(self, records: Iterable[Record]) -> None:
        for record in records:
            self.put(dict(record))

    def load_generated(self, n: int, seed: int, now: datetime | None) -> Population:
        """Replace the population with ``n`` generated indicators (explicit records stay)."""
        self.population = Population(n, seed, now)
        self._hidden = bytearray(n)
        self._orders.clear()
        self._masks.clear()
        self._changed()
        return self.population

    def _index(self, indicator_id: str) -> int | None:
        pop = self.population
        i = pop.index_of(indicator_id) if pop is not None else None
        return None if i is None or self._hidden[i] else i

    def get(self, indicator_id: str) -> Record | None:
        record = self.records.get(indicator_id)
        if record is not None:
            return record
        i = self._index(indicator_id)
        return self.population.record(i) if i is not None and self.population else None

    def resolve(self, ident: str) -> Record | None:
        """The record whose internal id, standard id or other STIX id is ``ident``."""
        text = str(ident).strip()
        record = self.records.get(text)
        if record is None:
            internal = self._aliases.get(text.lower())
            record = self.records.get(internal) if internal else None
        return record if record is not None else self.get(text)

    def attached_to(self, ref_id: str) -> list[str]:
        """Internal ids of the (explicit) indicators ``ref_id`` is attached to."""
        return list(self._attached.get(ref_id, ()))

    def row(self, ref: str | int) -> Record:
        """The record of a listing row (an explicit id or a population index)."""
        if isinstance(ref, str):
            record = self.records.get(ref)
            if record is None:  # a generated record a read by ids found (``listing``)
                record = self._by_id_rows[ref]
            return record
        assert self.population is not None
        return self.population.record(ref)

    def count(self) -> int:
        hidden = self._hidden.count(1)
        return len(self.records) + (self.population.n - hidden if self.population else 0)

    def __iter__(self) -> Iterator[Record]:
        """Every current record: explicit ones, then the visible generated ones (made now)."""
        yield from self.records.values()
        if self.population is not None:
            for i in range(self.population.n):
                if not self._hidden[i]:
                    yield self.population.record(i)

    def put(self, record: Record) -> None:
        i = self._index(record["id"])
        if i is not None:
            self._hidden[i] = 1
        before = self.records.get(record["id"])
        if before is not None:
            self._unindex(before)
        self.records[record["id"]] = record
        self._reindex(record)
        self._invalidate(record["id"])

    def remove(self, indicator_id: str) -> tuple[Record, str] | None:
        """Drop a record; return it with its last STIX JSON (None when there is none)."""
        record = self.records.get(indicator_id)
        if record is None:
            i = self._index(indicator_id)
            if i is None or self.population is None:
                return None
            self._hidden[i] = 1
            record = self.population.record(i)
        stix = self.stix_json(record)
        if self.records.pop(indicator_id, None) is not None:
            self._unindex(record)
        self._invalidate(indicator_id)
        return record, stix

    def _reindex(self, record: Record) -> None:
        for alias in (record["standard_id"], *(record.get("stix_ids") or [])):
            self._aliases[str(alias).lower()] = record["id"]
        for ref_id in record.get("external_references") or []:
            self._attached.setdefault(ref_id, {})[record["id"]] = None

    def _unindex(self, record: Record) -> None:
        for alias in (record["standard_id"], *(record.get("stix_ids") or [])):
            if self._aliases.get(str(alias).lower()) == record["id"]:
                del self._aliases[str(alias).lower()]
        for ref_id in record.get("external_references") or []:
            holders = self._attached.get(ref_id)
            if holders is not None:
                holders.pop(record["id"], None)
                if not holders:
                    del self._attached[ref_id]

    def refresh(self, indicator_id: str) -> None:
        """Drop the renderings of a record whose attached references changed (not the record:
        listings stay)."""
        for cache in self._node_cache.values():
            cache.pop(indicator_id, None)
        self._stix_cache.pop(indicator_id, None)

    def _invalidate(self, indicator_id: str) -> None:
        self.refresh(indicator_id)
        self._changed()

    def _changed(self) -> None:
        self._listing_cache.clear()
        self._version += 1

    # --- renderings ---------------------------------------------------------------------------

    def node_json(self, record: Record, fields: frozenset[str] | None = None) -> str:
        """The GraphQL node as JSON, projected on ``fields`` (``toStix`` alone: the STIX)."""
        explicit = record["id"] in self.records
        cache = self._node_cache.setdefault(fields, {}) if explicit else {}
        text = cache.get(record["id"])
        if text is None:
            node: dict[str, Any]
            if fields is not None and "toStix" in fields:
                node = {"toStix": self.stix_json(record)}
            else:
                node = graphql_node(record, fields, self.references.by_id)
            text = json.dumps(node, ensure_ascii=False)
            cache[record["id"]] = text
        return text

    def stix_json(self, record: Record) -> str:
        text = self._stix_cache.get(record["id"])
        if text is None:
            text = json.dumps(stix_object(record, self.references.by_id), ensure_ascii=False)
            if record["id"] in self.records:
                self._stix_cache[record["id"]] = text
        return text

    # --- listings -----------------------------------------------------------------------------

    def listing(self, filters: FilterGroup | None, needle: str, sort: Sort) -> Listing:
        """Records matching ``filters`` and the lower-case ``needle`` (name or pattern), in
        ``sort`` order; GraphQLError for an unknown filter key, operator or mode."""
        compiled = compile_filters(filters)
        wanted = _ids_restriction(filters)
        if wanted is not None:  # a read by ids: only those records can match (no full scan)
            matches = predicate(compiled)
            found: dict[str, Record] = {}
            for ident in wanted:
                record = self.resolve(ident)
                text = f"{record['name']} {record['pattern']}".lower() if record else ""
                if record is not None and matches(record) and (not needle or needle in text):
                    found[record["id"]] = record
            keyed = sorted((sort.record_key(r), r["id"]) for r in found.values())
            self._by_id_rows = found
            return Listing(sort, [k for k, _ in keyed], [i for _, i in keyed])
        cache_key = (json.dumps(filters, sort_keys=True), needle, sort)
        explicit = self._listing_cache.get(cache_key)
        if explicit is None:
            matches = predicate(compiled)
            keyed = sorted(
                (sort.record_key(r), r["id"])
                for r in self.records.values()
                if matches(r) and (not needle or needle in f"{r['name']} {r['pattern']}".lower())
            )
            explicit = ([k for k, _ in keyed], [i for _, i in keyed])
            self._listing_cache[cache_key] = explicit
        listing = Listing(sort, explicit[0], explicit[1])
        if self.population is not None and self.population.n:
            masks = self._population_masks(cache_key, compiled, needle, sort)
            listing.order, listing.order_mask = masks.order, masks.visible
        return listing

    def _population_masks(self, cache_key: Any, compiled: Any, needle: str, sort: Sort) -> _Masks:
        pop = self.population
        assert pop is not None
        masks = self._masks.get(cache_key)
        if masks is None:
            order = self._orders.get(sort)
            if order is None:
                order = self._orders[sort] = PopulationOrder(pop, sort)
            selected = pop.mask(compiled)
            if needle:
                found = pop.scan(lambda r: needle in f"{r['name']} {r['pattern']}".lower())
                selected = mask_and(selected, found)
            masks = _Masks(order, order.to_order(selected))
            self._masks[cache_key] = masks
            while len(self._masks) > _MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
        self._masks.move_to_end(cache_key)
        if masks.version != self._version:
            masks.visible = masks.base
            if 1 in self._hidden:
                shown = masks.order.to_order(mask_not(bytes(self._hidden)))
                masks.visible = mask_and(masks.base, shown)
            masks.version = self._version
        return masks

    def visible_generated(self) -> bytes:
        """1 where a generated index is neither changed nor deleted (index order)."""
        return mask_not(bytes(self._hidden))


def _ids_restriction(filters: FilterGroup | None) -> list[str] | None:
    """The ids a filter group restricts its matches to (an ``ids`` equality under a top-level
    ``and``), or ``None`` when it does not."""
    if not isinstance(filters, dict) or str(filters.get("mode", "and")).lower() != "and":
        return None
    for item in filters.get("filters") or []:
        if not isinstance(item, dict):
            continue
        key = item.get("key")
        keys = key if isinstance(key, list) else [key]
        operator = str(item.get("operator") or "eq").lower()
        mode = str(item.get("mode") or "or").lower()
        values = item.get("values")
        if keys == ["ids"] and operator == "eq" and mode == "or" and isinstance(values, list):
            return [str(v) for v in values]
    return None
