"""What Defender holds, as the planner sees it: a listing split into the indicators we own
and a count of everyone else's.

Owns ``ActualState`` and ``split_owned`` (with the service's memo of parsed owned rows). Reads
rows handed to it (the engine lists Defender); must not: call Defender or OpenCTI, or decide
what to change (``plan``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from reconciler.errors import ListingError
from reconciler.mapping import canonical_value
from reconciler.model import (
    DefenderIndicator,
    IndicatorKey,
    IndicatorType,
    Ownership,
    RawIndicator,
)
from reconciler.plan import ForeignIdentity, foreign_identity

__all__ = ["ActualState", "OwnedMemo", "raw_key", "split_owned"]


@dataclass(frozen=True)
class ActualState:
    """What Defender holds: the indicators we own, how many others use the quota, and the
    identities other applications hold (``held_by_others``, see ``foreign_identity``): an
    import of one of those would rewrite someone else's indicator."""

    owned: tuple[DefenderIndicator, ...]
    non_owned_count: int
    held_by_others: Mapping[ForeignIdentity, str] = field(default_factory=dict)
    #: Owned indicators outside the keys a scoped read asked for (counted, not parsed).
    owned_outside: int = 0


#: Owned rows parsed by earlier listings, by id: (fingerprint of the raw row, the parse).
OwnedMemo = dict[str, tuple[int, DefenderIndicator]]


def split_owned(
    rows: Iterable[RawIndicator],
    ownership: Ownership,
    keys: Collection[IndicatorKey] | None = None,
    memo: OwnedMemo | None = None,
) -> ActualState:
    """Partition a listing into owned indicators (``ownership.owns``) and a count of the rest;
    with ``keys``, only the owned indicators holding one of them are read (a scoped run), the
    others counted in ``owned_outside``.

    Tolerant reader: owned values are brought to canonical form (``mapping.canonical_value``)
    and unknown enum names kept as text (see ``DefenderIndicator``), so an equivalent echo or a
    portal edit never makes the listing unusable. Only an owned row without an id or value
    does: never a hole in what we own. With ``memo``, a row equal to one parsed before is not
    parsed again (the service's steady state); ``memo`` then holds exactly the rows read."""
    owned: list[DefenderIndicator] = []
    held: dict[ForeignIdentity, str] = {}
    others = outside = 0
    seen: OwnedMemo = {}
    for row in rows:
        if ownership.owns(row.get("application")):
            if keys is not None and raw_key(row) not in keys:
                outside += 1
                continue
            owned.append(_read_owned(row) if memo is None else _read_owned_memo(row, memo, seen))
            continue
        others += 1
        key = raw_key(row)
        ident = foreign_identity(key.type.value, key.value) if key else None
        if ident is not None and ident not in held:
            app = row.get("application") or "(no application)"
            held[ident] = f"{app!r} (action {row.get('action')})"
    if memo is not None and keys is None:  # a full listing: keep what it read, only that
        memo.clear()
        memo.update(seen)
    return ActualState(tuple(owned), others, held, outside)


def _owned_fingerprint(row: RawIndicator) -> int:
    """A 64-bit hash of every field of a listing row a ``DefenderIndicator`` keeps (a hash,
    not the strings: the memory of 15,000 owned rows stays small)."""
    groups = row.get("rbacGroupNames")
    return hash(
        (
            row.get("lastUpdateTime"),
            row.get("indicatorType"),
            row.get("indicatorValue"),
            row.get("action"),
            row.get("severity"),
            row.get("title"),
            row.get("description"),
            row.get("application"),
            row.get("externalId"),
            row.get("expirationTime"),
            row.get("generateAlert"),
            tuple(groups) if isinstance(groups, list) else groups,
            row.get("recommendedActions"),
            row.get("educateUrl"),
            row.get("createdBy"),
            row.get("createdBySource"),
            row.get("creationTimeDateTimeUtc"),
        )
    )


def _read_owned_memo(row: RawIndicator, memo: OwnedMemo, seen: OwnedMemo) -> DefenderIndicator:
    ident = str(row.get("id"))
    try:
        fingerprint = _owned_fingerprint(row)
    except TypeError:  # a value that cannot be hashed: just parse it, every time
        return _read_owned(row)
    known = memo.get(ident)
    parsed = known[1] if known is not None and known[0] == fingerprint else _read_owned(row)
    seen[ident] = (fingerprint, parsed)
    return parsed


def raw_key(row: RawIndicator) -> IndicatorKey | None:
    """The canonical key of a listing row, without parsing it (``None``: not keyable)."""
    type_name, value = row.get("indicatorType"), row.get("indicatorValue")
    kind = _TYPES.get(type_name.strip().casefold()) if isinstance(type_name, str) else None
    if kind is None or not isinstance(value, str) or not value.strip():
        return None
    return IndicatorKey(kind, canonical_value(kind, value))


_TYPES = {t.value.casefold(): t for t in IndicatorType}


def _read_owned(row: RawIndicator) -> DefenderIndicator:
    try:
        ind = DefenderIndicator.from_raw(row)
    except ValidationError as exc:
        raise ListingError(
            f"owned indicator id={row.get('id')!r} could not be read "
            f"({exc.error_count()} invalid fields); nothing acted on"
        ) from exc
    if isinstance(ind.indicator_type, IndicatorType):
        value = canonical_value(ind.indicator_type, ind.indicator_value)
        if value != ind.indicator_value:
            ind = ind.model_copy(update={"indicator_value": value})
    return ind
