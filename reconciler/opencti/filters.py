"""The stream's filters as an ``indicators`` listing filter: exactly, or not at all.

The desired state is "the indicators the live stream would send". The stream's filters are a
FilterGroup as OpenCTI stores it; the listing must apply the very same selection. A key the
``indicators`` query cannot use, an operator or a mode we cannot pass on, would make the
listing select more (a dropped condition inside an ``and``: every indicator scored 60+ gets
blocked) or less (inside an ``or``: deployed indicators get deleted) than the stream. Either is
worse than stopping, so ``listing_filter`` fails closed: it raises ``UnusableFilterError``
naming the key (or operator, or mode) and the stream, and nothing is planned, written or
deleted. The way out is ``opencti.listing_filters``: a FilterGroup in the same JSON format,
validated the same way, that replaces the stream's for the listing.

Only documented renames are translated (old stored names to the API's):
``x_opencti_workflow_id`` → ``workflow_id`` (the status), ``labelledBy`` → ``objectLabel``,
``markedBy`` → ``objectMarking``, ``creator`` → ``creator_id``. The usable keys are the
Indicator's own attributes and references (``USABLE_KEYS``); keys the platform accepts in
general but no Indicator has (relationship keys such as ``fromId``/``toId``/``regardingOf``,
container keys such as ``objects``, case keys such as ``priority``/``severity``, the stream-only
``connectedToId``) are refused, as is any key this version does not know.

Pure: no I/O. ``source`` calls it with what OpenCTI answered.
"""

from __future__ import annotations

from typing import Any

from reconciler.errors import UnusableFilterError

__all__ = [
    "MODES",
    "OPERATORS",
    "RENAMED_KEYS",
    "USABLE_KEYS",
    "FilterGroup",
    "UnusableFilterError",
    "listing_filter",
    "scoped_filter",
    "validate_group",
]

FilterGroup = dict[str, Any]

#: Filter keys that select Indicators in an ``indicators`` listing exactly as the stream does.
USABLE_KEYS = frozenset(
    {
        "entity_type",
        "ids",
        "id",
        "workflow_id",
        "objectLabel",
        "objectMarking",
        "createdBy",
        "creator_id",
        "confidence",
        "x_opencti_score",
        "x_opencti_detection",
        "x_opencti_main_observable_type",
        "pattern_type",
        "indicator_types",
        "revoked",
        "valid_from",
        "valid_until",
        "name",
        "created",
        "modified",
        "created_at",
        "updated_at",
    }
)
#: Stored (older) names → the API's name. Nothing else is translated.
RENAMED_KEYS = {
    "x_opencti_workflow_id": "workflow_id",
    "labelledBy": "objectLabel",
    "markedBy": "objectMarking",
    "creator": "creator_id",
}
OPERATORS = frozenset({"eq", "not_eq", "gt", "gte", "lt", "lte", "nil", "not_nil"})
MODES = frozenset({"and", "or"})

_INDICATOR = {"key": ["entity_type"], "values": ["Indicator"], "operator": "eq", "mode": "or"}


def validate_group(group: Any, origin: str) -> FilterGroup:
    """``group`` with documented renames applied; ``UnusableFilterError`` for anything that
    could not be applied exactly. ``origin`` says where it came from, for the message."""
    if not isinstance(group, dict):
        raise UnusableFilterError(f"{origin}: the filters are not a FilterGroup object")
    mode = _mode(group.get("mode", "and"), origin)
    filters = group.get("filters") or []
    groups = group.get("filterGroups") or []
    if not isinstance(filters, list) or not isinstance(groups, list):
        raise UnusableFilterError(f"{origin}: 'filters' and 'filterGroups' must be lists")
    return {
        "mode": mode,
        "filters": [_filter(f, origin) for f in filters],
        "filterGroups": [validate_group(g, origin) for g in groups],
    }


def _mode(value: Any, origin: str) -> str:
    mode = str(value or "and").lower()
    if mode not in MODES:
        raise UnusableFilterError(
            f"{origin}: filter mode {value!r} cannot be applied to the indicators listing "
            f"(only {', '.join(sorted(MODES))}); {_WAY_OUT}"
        )
    return mode


def _filter(flt: Any, origin: str) -> dict[str, Any]:
    if not isinstance(flt, dict):
        raise UnusableFilterError(f"{origin}: a filter is not an object")
    raw_keys = flt.get("key")
    keys = [raw_keys] if isinstance(raw_keys, str) else list(raw_keys or [])
    if not keys or not all(isinstance(k, str) for k in keys):
        raise UnusableFilterError(f"{origin}: a filter has no key")
    translated = []
    for key in keys:
        name = RENAMED_KEYS.get(key, key)
        if name not in USABLE_KEYS:
            raise UnusableFilterError(
                f"{origin}: filter key {key!r} cannot be applied to the indicators listing "
                f"exactly (it would select more or fewer indicators than the stream sends); "
                f"{_WAY_OUT}"
            )
        translated.append(name)
    operator = str(flt.get("operator") or "eq")
    if operator not in OPERATORS:
        raise UnusableFilterError(
            f"{origin}: filter operator {operator!r} (key {keys[0]!r}) cannot be applied to "
            f"the indicators listing; {_WAY_OUT}"
        )
    values = flt.get("values") or []
    if not isinstance(values, list) or any(v is None for v in values):
        raise UnusableFilterError(f"{origin}: filter values of key {keys[0]!r} are not a list")
    return {
        "key": translated,
        "values": values,
        "operator": operator,
        "mode": _mode(flt.get("mode", "or"), origin),
    }


_WAY_OUT = (
    "nothing is planned or written. Set opencti.listing_filters (OPENCTI_LISTING_FILTERS) to a "
    "FilterGroup that selects the same indicators with usable keys"
)


def listing_filter(stream: FilterGroup | None, origin: str) -> FilterGroup:
    """The ``indicators`` filter: ``entity_type = Indicator`` AND the validated group (``None``
    = every indicator)."""
    groups = [] if not stream else [validate_group(stream, origin)]
    return {"mode": "and", "filters": [dict(_INDICATOR)], "filterGroups": groups}


def scoped_filter(listing: FilterGroup, ids: list[str]) -> FilterGroup:
    """``listing`` restricted to the OpenCTI ``ids`` (internal, standard or STIX ids)."""
    return {
        "mode": "and",
        "filters": [{"key": ["ids"], "values": ids, "operator": "eq", "mode": "or"}],
        "filterGroups": [listing],
    }
