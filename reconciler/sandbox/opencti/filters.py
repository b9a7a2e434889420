"""OpenCTI filters: evaluation of a FilterGroup (the 5.12+ format) on a record.

Owns the filter keys the fake knows (anything else is OpenCTI's "incorrect filter keys" error),
the operators ``eq not_eq gt gte lt lte nil not_nil``, per-filter ``mode`` and nested groups.
``id`` matches the internal id or the standard_id; ``ids`` (as real OpenCTI) also matches any
of the record's other STIX ids (``stix_ids``), with ``eq``/``not_eq`` only. Label, marking and
author filters take internal ids, as in stored and API filters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.opencti.core import (
    CREATOR_ID,
    PARENT_TYPES,
    FilterGroup,
    GraphQLError,
    Record,
    author_id,
    marking_id,
)

_NUMERIC_KEYS = frozenset({"x_opencti_score", "confidence"})
_BOOL_KEYS = frozenset({"revoked", "x_opencti_detection"})
_OPERATORS = frozenset({"eq", "not_eq", "gt", "gte", "lt", "lte", "nil", "not_nil"})
_ID_LIST_OPERATORS = frozenset({"eq", "not_eq"})


def _filter_values(record: Record, key: str) -> list[Any]:
    """Values of ``record`` for a filter key (a list; empty = no value)."""
    value: Any
    match key:
        case "entity_type":
            return list(PARENT_TYPES)
        case "x_opencti_score":
            value = record.get("score")
        case "confidence":
            value = record.get("confidence")
        case "revoked":
            value = bool(record.get("revoked"))
        case "x_opencti_detection":
            value = bool(record.get("detection"))
        case "x_opencti_main_observable_type":
            value = record.get("main_observable_type")
        case "pattern_type" | "name" | "valid_until" | "valid_from" | "created_at" | "updated_at":
            value = record.get(key)
        case "objectLabel":
            return [label_id(v) for v in record.get("labels") or []]
        case "objectMarking":
            return [marking_id(m) for m in record.get("markings") or []]
        case "indicator_types":
            return list(record.get("indicator_types") or [])
        case "createdBy":
            author = record.get("created_by")
            return [author_id(author)] if author else []
        case "creator_id":
            return [CREATOR_ID]
        case "id":
            return [record["id"], record["standard_id"]]
        case "ids":
            return [record["id"], record["standard_id"], *(record.get("stix_ids") or [])]
        case "x_opencti_workflow_id":
            return []
        case _:
            raise GraphQLError(
                f"incorrect filter keys not existing in any schema definition: {key}",
                "UNSUPPORTED_ERROR",
            )
    return [] if value is None else [value]


def _compare(key: str, have: Any, operator: str, want: str) -> bool:
    if key in _BOOL_KEYS:
        left: Any = str(have).lower()
        right: Any = str(want).lower()
    elif key in _NUMERIC_KEYS:
        try:
            left, right = float(have), float(want)
        except (TypeError, ValueError):
            return False
    else:
        left, right = str(have), str(want)
    match operator:
        case "eq":
            return bool(left == right)
        case "gt":
            return bool(left > right)
        case "gte":
            return bool(left >= right)
        case "lt":
            return bool(left < right)
        case "lte":
            return bool(left <= right)
    raise GraphQLError(f"unsupported filter operator: {operator}", "UNSUPPORTED_ERROR")


Predicate = Callable[[Record], bool]


def _compile_filter(flt: dict[str, Any]) -> Predicate:
    """One filter as a predicate; the operator and key checks happen here, once."""
    keys = flt.get("key")
    key_list = [keys] if isinstance(keys, str) else list(keys or [])
    operator = flt.get("operator") or "eq"
    if operator not in _OPERATORS:
        raise GraphQLError(f"unsupported filter operator: {operator}", "UNSUPPORTED_ERROR")
    if "ids" in key_list and operator not in _ID_LIST_OPERATORS:
        raise GraphQLError(
            f"unsupported filter operator for key ids: {operator}", "UNSUPPORTED_ERROR"
        )
    mode = (flt.get("mode") or "or").lower()
    wanted = [str(v) for v in flt.get("values") or []]
    tests = [_compile_key(key, operator, mode, wanted) for key in key_list]
    if not tests:
        return lambda record: True
    return lambda record: any(test(record) for test in tests)


def _compile_key(key: str, operator: str, mode: str, wanted: list[str]) -> Predicate:
    _filter_values({"id": "", "standard_id": ""}, key)  # an unknown key fails now
    if operator == "nil":
        return lambda record: not _filter_values(record, key)
    if operator == "not_nil":
        return lambda record: bool(_filter_values(record, key))
    if not wanted:
        return lambda record: True
    combine = all if mode == "and" else any
    if operator in ("eq", "not_eq") and key not in _NUMERIC_KEYS and key not in _BOOL_KEYS:
        # Plain string equality: a set lookup per value (an ``ids`` filter holds hundreds).
        wanted_set = frozenset(wanted)
        if operator == "eq":
            if mode == "and":
                return lambda r: wanted_set <= {str(h) for h in _filter_values(r, key)}
            return lambda r: any(str(h) in wanted_set for h in _filter_values(r, key))
        if mode == "and":
            return lambda r: not any(str(h) in wanted_set for h in _filter_values(r, key))
        return lambda r: not wanted_set <= {str(h) for h in _filter_values(r, key)}

    def test(record: Record) -> bool:
        have = _filter_values(record, key)
        if operator == "not_eq":
            return combine(all(not _compare(key, h, "eq", w) for h in have) for w in wanted)
        return combine(any(_compare(key, h, operator, w) for h in have) for w in wanted)

    return test


def compile_group(group: FilterGroup | None) -> Predicate:
    """An OpenCTI FilterGroup (5.12+ format) as one predicate over records, compiled once
    (unknown keys and operators fail here, with OpenCTI's errors)."""
    if not group:
        return lambda record: True
    combine = all if (group.get("mode") or "and").lower() == "and" else any
    parts = [_compile_filter(f) for f in group.get("filters") or []]
    parts += [compile_group(g) for g in group.get("filterGroups") or []]
    if not parts:
        return lambda record: True
    return lambda record: combine(part(record) for part in parts)


def group_matches(record: Record, group: FilterGroup | None) -> bool:
    """Evaluate an OpenCTI FilterGroup on one record."""
    return compile_group(group)(record)


def validate_group(group: FilterGroup | None) -> None:
    """Reject unknown keys or operators even when there is no record to test."""
    compile_group(group)
