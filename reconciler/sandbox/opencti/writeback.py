"""Write-back to the fake OpenCTI: external references, identities and sightings changed the way
the platform changes them, with their live-stream events.

Owns the operations behind the write-back mutations and the emulator's helpers: upserting,
patching and deleting external references; attaching them to and detaching them from indicators
(explicit or generated: a generated indicator that changes becomes an explicit record, as any
change makes it) and sightings; upserting identities; adding (or merging into an existing one),
patching and deleting sightings, and dropping those of a deleted indicator. Each operation holds
the emulator's condition and logs its events: an indicator whose attachments change gets one
``update`` whose patch touches ``/external_references`` only (its ``updated_at`` and
``modified`` move, as on the platform); an edited reference updates every indicator and
sighting that carries it (their dates stay); a sighting gets ``create``, ``update`` or
``delete``. No change, no event. Errors are ``GraphQLError`` as the API answers them. Must not
read GraphQL documents or inputs (``mutations``) nor render (``render``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.sandbox.dataset import format_date
from reconciler.sandbox.opencti import stream
from reconciler.sandbox.opencti.core import GraphQLError, Record
from reconciler.sandbox.opencti.entities import (
    IDENTITY_CLASSES,
    clean_reference,
    not_found,
    reference_view,
    text_or_none,
)
from reconciler.sandbox.opencti.filters import date_ms
from reconciler.sandbox.opencti.render import sighting_stix, stix_references

if TYPE_CHECKING:
    from reconciler.sandbox.opencti.emulator import OpenCTIEmulator

REFERENCE_LABEL = "External references"


def _next(emu: OpenCTIEmulator) -> tuple[stream.StreamKey, str]:
    """The stream id of the next change and its record date."""
    key = emu._stream.next_key()
    return key, stream.key_date(key)


def _new_id(emu: OpenCTIEmulator) -> str:
    return str(uuid.UUID(int=emu._rng.getrandbits(128), version=4))


def iso_date(value: Any, name: str) -> str | None:
    """A DateTime input as the platform stores it (UTC, milliseconds); None for null."""
    if value is None:
        return None
    ms = date_ms(value)
    if ms is None:
        raise GraphQLError(
            f'Variable "$input" got invalid value {value!r} at "input.{name}"; '
            'Expected type "DateTime".',
            "BAD_USER_INPUT",
        )
    return format_date(datetime.fromtimestamp(ms / 1000, UTC))


def _indicator(emu: OpenCTIEmulator, ident: Any, action: str) -> Record:
    record = emu._store.resolve(str(ident)) if ident else None
    if record is None:
        raise not_found(f"Cannot {action} the relation, Stix-Domain-Object cannot be found.", ident)
    return record


# --------------------------------------------------------------------------- external references


def add_reference(emu: OpenCTIEmulator, fields: dict[str, Any]) -> Record:
    """``externalReferenceAdd``: the reference the fields identify (its description replaced
    when another one is given), else a new one."""
    cleaned = clean_reference(fields)
    with emu._cond:
        refs = emu._store.references
        existing = refs.find(cleaned)
        if existing is None:
            _, now = _next(emu)
            return refs.new(cleaned, _new_id(emu), now)
        description = cleaned["description"]
        if description is not None and description != existing.get("description"):
            return patch_reference(emu, existing["id"], {"description": description})
        return existing


def attach_reference(emu: OpenCTIEmulator, indicator: Any, ref_ident: Any) -> Record:
    """Attach a reference to an indicator (no change when it already is); the reference."""
    with emu._cond:
        record = _indicator(emu, indicator, "add")
        ref = _reference_to(emu, ref_ident, "add")
        ids = list(record.get("external_references") or [])
        if ref["id"] not in ids:
            message = f"adds `{ref['source_name']}` in `{REFERENCE_LABEL}`"
            _set_references(emu, record, [*ids, ref["id"]], message)
        return ref


def detach_reference(emu: OpenCTIEmulator, indicator: Any, ref_ident: Any) -> tuple[Record, bool]:
    """Detach a reference from an indicator; the indicator, and whether it was attached."""
    with emu._cond:
        record = _indicator(emu, indicator, "delete")
        ref = _reference_to(emu, ref_ident, "delete")
        ids = list(record.get("external_references") or [])
        if ref["id"] not in ids:
            return record, False
        message = f"removes `{ref['source_name']}` in `{REFERENCE_LABEL}`"
        after = _set_references(emu, record, [i for i in ids if i != ref["id"]], message)
        return after, True


def _reference_to(emu: OpenCTIEmulator, ref_ident: Any, verb: str) -> Record:
    """The reference a relation ``verb`` (add, delete) names; the platform's error if none."""
    ref = emu._store.references.resolve(ref_ident)
    if ref is None:
        raise not_found(
            f"Cannot {verb} the relation, External-Reference cannot be found.", ref_ident
        )
    return ref


def _set_references(emu: OpenCTIEmulator, before: Record, ids: list[str], message: str) -> Record:
    """Replace an indicator's attachments: one ``update`` patching ``/external_references``."""
    store = emu._store
    key, now = _next(emu)
    after = {**before, "external_references": ids}
    if emu.reference_edits_move_updated_at:
        after["updated_at"] = after["modified"] = now
    old = stix_references(before, store.references.by_id)
    store.put(after)
    new = stix_references(after, store.references.by_id)
    stream.emit(emu, key, "update", before, after, message=message, context=_refs_patch(old, new))
    return after


def _refs_patch(
    old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> tuple[stream.Patch, stream.Patch]:
    """The patch of an indicator's ``/external_references`` (empty lists are omitted fields)."""
    return stream.diff({"external_references": old or None}, {"external_references": new or None})


def patch_reference(emu: OpenCTIEmulator, ref_ident: Any, changes: dict[str, Any]) -> Record:
    """Change fields of a reference (cleaned values: ``source_name`` required); an ``update`` of
    every indicator and sighting it is attached to when something changed."""
    with emu._cond:
        store = emu._store
        refs = store.references
        ref = refs.get(ref_ident)
        _, now = _next(emu)
        after = refs.patched(ref, changes, now)
        if after == ref:
            return ref
        holders = [store.records[i] for i in store.attached_to(ref["id"])]
        old = {r["id"]: stix_references(r, refs.by_id) for r in holders}
        sightings = emu._sightings.with_reference(ref["id"])
        old_sightings = {s["id"]: sighting_stix(s, refs.by_id) for s in sightings}
        refs.put(after)
        message = f"replaces `{after['source_name']}` in `{REFERENCE_LABEL}`"
        for record in holders:
            key = emu._stream.next_key()
            store.refresh(record["id"])
            new = stix_references(record, refs.by_id)
            context = _refs_patch(old[record["id"]], new)
            stream.emit(emu, key, "update", record, record, message=message, context=context)
        for sighting in sightings:
            _emit_sighting_update(emu, old_sightings[sighting["id"]], sighting, message)
        return after


def delete_reference(emu: OpenCTIEmulator, ref_ident: Any) -> str:
    """Delete a reference, detached first from every indicator and sighting; its id."""
    with emu._cond:
        store = emu._store
        ref = store.references.get(ref_ident)
        message = f"removes `{ref['source_name']}` in `{REFERENCE_LABEL}`"
        for indicator_id in store.attached_to(ref["id"]):
            record = store.records[indicator_id]
            ids = [i for i in record.get("external_references") or [] if i != ref["id"]]
            _set_references(emu, record, ids, message)
        for sighting in emu._sightings.with_reference(ref["id"]):
            kept = [i for i in sighting["external_references"] if i != ref["id"]]
            _change_sighting(emu, sighting, {"external_references": kept}, message)
        store.references.remove(ref["id"])
        return str(ref["id"])


# --------------------------------------------------------------------------- identities


def add_identity(emu: OpenCTIEmulator, kind: Any, name: Any, description: Any) -> Record:
    """``identityAdd``: the identity of that type and name (any case), else a new one."""
    if kind not in IDENTITY_CLASSES:
        raise GraphQLError(
            f'Variable "$input" got invalid value {kind!r} at "input.type"; '
            f'Value {kind!r} does not exist in "IdentityType" enum.',
            "BAD_USER_INPUT",
        )
    clean_name = text_or_none(name)
    if clean_name is None:
        raise GraphQLError(
            'Variable "$input" got invalid value; Field "name" of required type "String!" '
            "was not provided.",
            "BAD_USER_INPUT",
        )
    with emu._cond:
        _, now = _next(emu)
        return emu._identities.upsert(str(kind), clean_name, text_or_none(description), now)


# --------------------------------------------------------------------------- sightings


def add_sighting(
    emu: OpenCTIEmulator,
    *,
    from_id: Any,
    to_id: Any,
    count: int,
    first_seen: str | None = None,
    last_seen: str | None = None,
    description: str | None = None,
    references: list[Any] | None = None,
    confidence: int | None = None,
    negative: bool | None = None,
) -> Record:
    """``stixSightingRelationshipAdd``: a new sighting (``create``), or the one of the same
    indicator and identity first seen within 30 days merged (``update`` when it changed):
    count replaced, first seen the earliest, last seen the latest, description replaced when
    given, references added. Dates are stored ones (:func:`iso_date`); missing: now."""
    with emu._cond:
        store, refs = emu._store, emu._store.references
        indicator = store.resolve(str(from_id)) if from_id else None
        if indicator is None:
            raise GraphQLError(
                "Element(s) not found", "MISSING_REFERENCE_ERROR", {"fromId": from_id}
            )
        identity = emu._identities.resolve(to_id)
        if identity is None:
            raise GraphQLError("Element(s) not found", "MISSING_REFERENCE_ERROR", {"toId": to_id})
        ref_ids: list[str] = []
        for ident in references or []:
            ref = refs.get(ident)
            if ref["id"] not in ref_ids:
                ref_ids.append(ref["id"])
        key, now = _next(emu)
        first = first_seen or now
        last = last_seen or first
        _check_window(first, last)
        first_ms = date_ms(first)
        assert first_ms is not None
        existing = emu._sightings.match(indicator["id"], identity["id"], first_ms)
        if existing is None:
            fields = {
                "from_id": indicator["id"],
                "from_standard_id": indicator["standard_id"],
                "from_name": indicator.get("name"),
                "to_id": identity["id"],
                "to_standard_id": identity["standard_id"],
                "to_type": identity["entity_type"],
                "to_name": identity["name"],
                "attribute_count": count,
                "first_seen": first,
                "last_seen": last,
                "description": description,
                "confidence": confidence,
                "negative": bool(negative),
                "external_references": ref_ids,
            }
            sighting = emu._sightings.new(fields, emu._rng.getrandbits(128), now)
            message = (
                f"creates a Stix-Sighting-Relationship `{indicator.get('name')}` sighted in "
                f"`{identity['name']}`"
            )
            stix = sighting_stix(sighting, refs.by_id)
            stream.emit_object(emu, key, "create", stix, message=message)
            return sighting
        changes: dict[str, Any] = {
            "attribute_count": count,
            "first_seen": min(existing["first_seen"], first, key=_ms),
            "last_seen": max(existing["last_seen"], last, key=_ms),
            "external_references": [
                *existing["external_references"],
                *(i for i in ref_ids if i not in existing["external_references"]),
            ],
        }
        if description is not None:
            changes["description"] = description
        if confidence is not None:
            changes["confidence"] = confidence
        if negative is not None:
            changes["negative"] = bool(negative)
        return _change_sighting(emu, existing, changes, "updates the sighting")


def patch_sighting(emu: OpenCTIEmulator, ident: Any, changes: dict[str, Any]) -> Record:
    """Change fields of a sighting (record keys, checked values); ``update`` when changed."""
    with emu._cond:
        sighting = emu._sightings.get(ident)
        merged = {**sighting, **changes}
        _check_window(merged["first_seen"], merged["last_seen"])
        shown = ", ".join(f"`{v}` in `{k}`" for k, v in changes.items())
        return _change_sighting(emu, sighting, changes, f"replaces {shown}")


def attach_to_sighting(emu: OpenCTIEmulator, ident: Any, ref_ident: Any) -> Record:
    """Attach a reference to a sighting (no change when it already is); the reference."""
    with emu._cond:
        sighting = emu._sightings.get(ident)
        ref = _reference_to(emu, ref_ident, "add")
        ids = sighting["external_references"]
        if ref["id"] not in ids:
            message = f"adds `{ref['source_name']}` in `{REFERENCE_LABEL}`"
            _change_sighting(emu, sighting, {"external_references": [*ids, ref["id"]]}, message)
        return ref


def detach_from_sighting(emu: OpenCTIEmulator, ident: Any, ref_ident: Any) -> Record:
    """Detach a reference from a sighting (no change when it is not attached); the sighting."""
    with emu._cond:
        sighting = emu._sightings.get(ident)
        ref = emu._store.references.get(ref_ident)
        ids = sighting["external_references"]
        if ref["id"] not in ids:
            return sighting
        message = f"removes `{ref['source_name']}` in `{REFERENCE_LABEL}`"
        kept = [i for i in ids if i != ref["id"]]
        return _change_sighting(emu, sighting, {"external_references": kept}, message)


def delete_sighting(emu: OpenCTIEmulator, ident: Any) -> str:
    """Delete a sighting (``delete`` carrying its last STIX); its id."""
    with emu._cond:
        sighting = emu._sightings.get(ident)
        _drop_sighting(emu, sighting)
        return str(sighting["id"])


def drop_sightings_of(emu: OpenCTIEmulator, indicator_id: str) -> None:
    """Delete the sightings of an indicator being deleted (the platform deletes relations)."""
    with emu._cond:
        for sighting in emu._sightings.of_indicator(indicator_id):
            _drop_sighting(emu, sighting)


def _drop_sighting(emu: OpenCTIEmulator, sighting: Record) -> None:
    key = emu._stream.next_key()
    stix = sighting_stix(sighting, emu._store.references.by_id)
    emu._sightings.remove(sighting["id"])
    message = f"deletes a Stix-Sighting-Relationship `{sighting.get('from_name')}`"
    stream.emit_object(emu, key, "delete", stix, message=message)


def _change_sighting(
    emu: OpenCTIEmulator, before: Record, changes: dict[str, Any], message: str
) -> Record:
    after = {**before, **changes}
    if after == before:
        return before
    key, now = _next(emu)
    after["updated_at"] = after["modified"] = now
    old = sighting_stix(before, emu._store.references.by_id)
    emu._sightings.put(after)
    new = sighting_stix(after, emu._store.references.by_id)
    stream.emit_object(emu, key, "update", new, message=message, context=stream.diff(old, new))
    return after


def _emit_sighting_update(
    emu: OpenCTIEmulator, old: dict[str, Any], sighting: Record, message: str
) -> None:
    """An ``update`` of a sighting whose rendering changed while its record did not."""
    key = emu._stream.next_key()
    new = sighting_stix(sighting, emu._store.references.by_id)
    stream.emit_object(emu, key, "update", new, message=message, context=stream.diff(old, new))


def _ms(iso: str) -> int:
    ms = date_ms(iso)
    return 0 if ms is None else ms


def _check_window(first: str, last: str) -> None:
    if _ms(last) < _ms(first):
        raise GraphQLError(
            "You cant create a relation with last_seen less than first_seen", "FUNCTIONAL_ERROR"
        )


# --------------------------------------------------------------------------- views


def sighting_view(emu: OpenCTIEmulator, sighting: Record) -> dict[str, Any]:
    """A sighting as the emulator's helpers show it."""
    refs = emu._store.references.by_id
    return {
        "id": sighting["id"],
        "standard_id": sighting["standard_id"],
        "from_id": sighting["from_id"],
        "to_id": sighting["to_id"],
        "attribute_count": sighting["attribute_count"],
        "first_seen": sighting["first_seen"],
        "last_seen": sighting["last_seen"],
        "description": sighting.get("description"),
        "confidence": sighting.get("confidence"),
        "x_opencti_negative": bool(sighting.get("negative")),
        "external_references": [
            reference_view(refs[i]) for i in sighting["external_references"] if i in refs
        ],
    }
