"""The objects around indicators that write-back touches: external references, identities and
sightings of the fake OpenCTI.

Owns their records (plain dicts, replaced whole on change, never edited in place), their ids,
and who they are as the platform decides it: an external reference is its ``url`` when it has
one, else its ``source_name`` and ``external_id`` (its standard id is made from those, so a
patch of them moves it, and a patch onto another reference's identity is refused); an identity
is its type and case-insensitive name (an Organization's ids are those of the author of that
name, as indicators render it); a sighting merges with the sighting of the same indicator in
the same identity first seen within 30 days of it. Must not lock, emit events or render:
``writeback`` changes these objects and logs events, ``render`` renders them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from reconciler.sandbox.opencti.core import NAMESPACE, GraphQLError, Record, author_id, uuid5
from reconciler.sandbox.opencti.filters import date_ms

#: Fields of an external reference a client gives and reads back.
REFERENCE_FIELDS = ("source_name", "external_id", "url", "description")
#: Identity types ``identityAdd`` accepts → their STIX ``identity_class``.
IDENTITY_CLASSES = {
    "Organization": "organization",
    "Individual": "individual",
    "Sector": "class",
    "System": "system",
}
SIGHTING_WINDOW_MS = 30 * 86_400_000
_DUPLICATE = "This update will produce a duplicate"


def not_found(message: str, ident: Any) -> GraphQLError:
    return GraphQLError(message, "FUNCTIONAL_ERROR", {"id": ident})


def text_or_none(value: Any) -> str | None:
    """A trimmed string, or None for null and blank values."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# --------------------------------------------------------------------------- references


def reference_standard_id(source_name: str | None, external_id: str | None, url: str | None) -> str:
    """The standard id of an external reference: from its ``url``, else source and external id."""
    key: dict[str, Any] = (
        {"url": url} if url else {"source_name": source_name, "external_id": external_id}
    )
    text = json.dumps(key, sort_keys=True, ensure_ascii=False)
    return "external-reference--" + str(uuid.uuid5(NAMESPACE, text))


def reference_view(ref: Record) -> dict[str, Any]:
    """What a client reads back of an external reference."""
    return {"id": ref["id"], **{name: ref.get(name) for name in REFERENCE_FIELDS}}


class _Registry:
    """Records by internal id (creation order), also found by standard id."""

    #: The error message when an id resolves to nothing (``get``).
    missing = "Entity cannot be found."

    def __init__(self) -> None:
        self.by_id: dict[str, Record] = {}
        self._by_standard: dict[str, str] = {}

    def resolve(self, ident: Any) -> Record | None:
        """The record whose internal or standard id is ``ident``."""
        text = str(ident or "").strip()
        found = self.by_id.get(text)
        if found is None:
            internal = self._by_standard.get(text.lower())
            found = self.by_id.get(internal) if internal else None
        return found

    def get(self, ident: Any) -> Record:
        found = self.resolve(ident)
        if found is None:
            raise not_found(self.missing, ident)
        return found

    def put(self, record: Record) -> None:
        """Store ``record`` (a new one, or a new version whose standard id may have changed)."""
        before = self.by_id.get(record["id"])
        if before is not None and self._by_standard.get(before["standard_id"]) == record["id"]:
            del self._by_standard[before["standard_id"]]
        self.by_id[record["id"]] = record
        self._by_standard[record["standard_id"]] = record["id"]

    def remove(self, record_id: str) -> Record | None:
        record = self.by_id.pop(record_id, None)
        if record is not None and self._by_standard.get(record["standard_id"]) == record_id:
            del self._by_standard[record["standard_id"]]
        return record


class References(_Registry):
    """External references by internal id (creation order), with their standard ids."""

    missing = "External reference cannot be found."

    def find(self, fields: dict[str, Any]) -> Record | None:
        """The reference the given fields identify, if the platform holds it."""
        std = reference_standard_id(
            fields.get("source_name"), fields.get("external_id"), fields.get("url")
        )
        internal = self._by_standard.get(std)
        return self.by_id.get(internal) if internal else None

    def new(self, fields: dict[str, Any], new_id: str, now: str) -> Record:
        """A reference made from cleaned fields (see :func:`clean_reference`), stored."""
        ref: Record = {
            "id": new_id,
            "standard_id": reference_standard_id(
                fields.get("source_name"), fields.get("external_id"), fields.get("url")
            ),
            **{name: fields.get(name) for name in REFERENCE_FIELDS},
            "created_at": now,
            "updated_at": now,
        }
        self.put(ref)
        return ref

    def patched(self, ref: Record, changes: dict[str, Any], now: str) -> Record:
        """``ref`` with cleaned changes applied and its standard id recomputed (not stored);
        GraphQLError when it would take another reference's identity."""
        after = dict(ref)
        after.update(changes)
        if not after.get("source_name"):
            raise GraphQLError("source_name cannot be empty", "FUNCTIONAL_ERROR")
        after["standard_id"] = reference_standard_id(
            after.get("source_name"), after.get("external_id"), after.get("url")
        )
        other = self._by_standard.get(after["standard_id"])
        if other is not None and other != ref["id"]:
            raise GraphQLError(_DUPLICATE, "FUNCTIONAL_ERROR", {"id": ref["id"]})
        if after != ref:
            after["updated_at"] = now
        return after


def clean_reference(fields: dict[str, Any]) -> dict[str, Any]:
    """``ExternalReferenceAddInput`` fields trimmed (blank: null); GraphQLError without a
    ``source_name`` or with a field the fake does not know."""
    unknown = set(fields) - set(REFERENCE_FIELDS) - {"hash", "file", "stix_id", "update"}
    if unknown:
        raise GraphQLError(
            f'Field "{sorted(unknown)[0]}" is not defined by type "ExternalReferenceAddInput".',
            "BAD_USER_INPUT",
        )
    cleaned = {name: text_or_none(fields.get(name)) for name in REFERENCE_FIELDS}
    if cleaned["source_name"] is None:
        raise GraphQLError(
            'Variable "$input" got invalid value; Field "source_name" of required type '
            '"String!" was not provided.',
            "BAD_USER_INPUT",
        )
    return cleaned


# --------------------------------------------------------------------------- identities


class Identities(_Registry):
    """Identities by internal id (creation order), found by type and name or by standard id."""

    def __init__(self) -> None:
        super().__init__()
        self._by_key: dict[tuple[str, str], str] = {}

    def upsert(self, kind: str, name: str, description: str | None, now: str) -> Record:
        """The identity of ``kind`` named ``name`` (any case): the existing one (its description
        replaced when one is given), else a new one."""
        key = (kind, name.lower())
        internal = self._by_key.get(key)
        if internal is not None:
            identity = self.by_id[internal]
            if description is not None and description != identity.get("description"):
                identity = {**identity, "description": description, "updated_at": now}
                self.by_id[internal] = identity
            return identity
        new_id = (
            author_id(name) if kind == "Organization" else uuid5("identity", f"{kind}:{key[1]}")
        )
        identity = {
            "id": new_id,
            "standard_id": "identity--" + new_id,
            "entity_type": kind,
            "identity_class": IDENTITY_CLASSES[kind],
            "name": name,
            "description": description,
            "created_at": now,
            "updated_at": now,
        }
        self.put(identity)
        self._by_key[key] = new_id
        return identity


# --------------------------------------------------------------------------- sightings


class Sightings(_Registry):
    """Sightings by internal id in creation order (``seq`` numbers them for cursors)."""

    missing = "Sighting cannot be found."

    def __init__(self) -> None:
        super().__init__()
        self._seq = 0

    def match(self, from_id: str, to_id: str, first_seen_ms: int) -> Record | None:
        """The oldest sighting of ``from_id`` in ``to_id`` first seen within the window."""
        for sighting in self.by_id.values():
            if sighting["from_id"] != from_id or sighting["to_id"] != to_id:
                continue
            seen = date_ms(sighting["first_seen"])
            if seen is not None and abs(seen - first_seen_ms) <= SIGHTING_WINDOW_MS:
                return sighting
        return None

    def new(self, fields: dict[str, Any], rng_id: int, now: str) -> Record:
        """A sighting made from checked fields, stored."""
        self._seq += 1
        internal = str(uuid.UUID(int=rng_id, version=4))
        sighting: Record = {
            "id": internal,
            "standard_id": "sighting--" + str(uuid.uuid5(NAMESPACE, "sighting:" + internal)),
            "seq": self._seq,
            **fields,
            "created": now,
            "modified": now,
            "created_at": now,
            "updated_at": now,
        }
        self.put(sighting)
        return sighting

    def of_indicator(self, indicator_id: str) -> list[Record]:
        return [s for s in self.by_id.values() if s["from_id"] == indicator_id]

    def with_reference(self, ref_id: str) -> list[Record]:
        return [s for s in self.by_id.values() if ref_id in s["external_references"]]
