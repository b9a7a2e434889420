"""OpenCTI filters: a FilterGroup (5.12+ format) checked and compiled once, then evaluated.

Owns the filter keys the fake knows, the operators and modes, the errors the platform answers,
and one evaluation that serves both the ``indicators`` listing and the live stream's filters
(stored form: ``key`` a string or a list; label, marking and author values internal ids).
Must not know about listings, orderings or HTTP: ``store`` and ``population`` ask it for a
compiled tree (``compile_filters``) and the candidate values of a record (``candidates``).

Semantics, and what they follow in the platform's source (``utils/filtering``: the boolean
logic engine of the stream, the key checks, the special-key conversion of listings, and the
Elasticsearch query builder):

* A filter tests the record's *candidate values* for its key (a list: labels, marking ids,
  ``ids``…; one value or none for single attributes) against its ``values`` with ``operator``
  and ``mode`` (``or``: one value suffices, ``and``: every value must hold). Strings compare
  trimmed and case-insensitively (the stream lower-cases, the index's keyword normaliser too);
  numbers (``x_opencti_score``, ``confidence``) as floats (values that are not numbers are
  dropped); booleans: ``true``/``yes``/``1`` are true; dates (``valid_from``, ``valid_until``,
  ``created_at``, ``updated_at``, ``created``, ``modified``) as instants (unreadable values
  dropped). ``gt gte lt lte`` on strings compare alphabetically.
* ``nil``: no candidate value (an indicator without labels is ``objectLabel nil``; an empty
  string counts as no value, as the index's ``nil`` on strings); ``not_nil``: at least one.
  ``eq`` with no values is ``nil`` and ``not_eq`` with no values ``not_nil`` (the stream's
  rule); any other operator with no values matches nothing.
* ``not_eq`` with several values: mode ``or`` matches when *at least one* value is absent,
  mode ``and`` when *every* value is absent (stream engine and index query agree, for labels,
  markings and authors too). The exception is ``ids``: its values become a ``terms`` query
  whose ``not_eq`` excludes *every* listed id (mode ``or``; mode ``and`` is refused).
* ``contains``/``starts_with``/``ends_with`` and their ``not_`` forms work on string keys (the
  engine's rules); the other operators of the platform's enum (``search``, ``within``,
  ``only_eq_to``…) answer ``UNSUPPORTED_ERROR`` (not emulated); a value outside the enum, or a
  mode other than ``and``/``or``, answers the GraphQL coercion error (``BAD_USER_INPUT``).
* A filter with several keys matches when one key matches (the index searches all fields);
  ``ids``, ``entity_type``, the workflow keys and the relationship keys take one key only, and
  ``nil``/``not_nil`` and range operators one key only (``UNSUPPORTED_ERROR`` otherwise).
* Keys: ``entity_type`` (Indicator and its parent types), ``ids`` (internal id, standard_id or
  any other STIX id; ``eq``/``not_eq``/``nil``/``not_nil``; ``nil`` and ``not_nil`` match no
  indicator: the platform requires them of all four id attributes at once, and every indicator
  has an internal id while none has alias ids), ``id``/``internal_id`` (the internal id),
  ``standard_id``, ``workflow_id`` and ``x_opencti_workflow_id`` (a status id or a status
  template id; ``eq``/``not_eq``/``nil``/``not_nil`` only), ``objectLabel`` (label ids; a value
  that is not an id is taken as a label name, case-insensitively, as the API resolves it),
  ``objectMarking`` (marking ids or STIX ids), ``createdBy`` (author ids or their STIX ids),
  ``creator_id``, the numbers, the booleans, the dates, ``pattern_type``, ``pattern``,
  ``x_opencti_main_observable_type``, ``indicator_types``, ``name``, ``description``.
* Keys the platform accepts in general but no indicator of the fake carries (``objects``,
  ``priority``, ``severity``, ``objectAssignee``, ``published``…) are accepted and have no
  value: ``eq`` matches nothing, ``not_eq`` everything, ``nil`` everything. Relationship keys
  (``fromId``, ``toId``, ``fromTypes``, ``toTypes``, ``regardingOf``, ``connectedToId``…) are
  accepted and match no indicator whatever the operator (the stream's testers answer false for
  anything but a relationship; the listing turns them into conditions on relationship
  connections, which an indicator has none of).
* An unknown key answers ``Incorrect filter keys not existing in any schema definition`` with
  code ``UNSUPPORTED_ERROR`` and the keys in ``extensions.data.keys``; a filter without a key
  ``Incorrect filters format``. Groups: mode ``and``/``or`` (missing: ``and``); an empty group
  is ignored, and a group with nothing left matches everything.
* Sighting listings (``sighting_predicate``) know ``fromId`` (the sighted indicator) and
  ``toId`` (the identity where it was sighted), by internal or standard id, with ``eq`` and
  ``not_eq`` (the same value rules); any other key answers ``UNSUPPORTED_ERROR``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.opencti.core import (
    CREATOR_ID,
    PARENT_TYPES,
    STATUSES,
    TLP,
    FilterGroup,
    GraphQLError,
    Record,
    author_id,
    marking_id,
    unsupported,
)

STRING, NUMBER, BOOL, DATE = "string", "number", "bool", "date"

#: Keys an indicator of the fake carries, with how their values compare.
INDICATOR_KEYS: dict[str, str] = {
    "entity_type": STRING,
    "ids": STRING,
    "id": STRING,
    "internal_id": STRING,
    "standard_id": STRING,
    "x_opencti_stix_ids": STRING,
    "workflow_id": STRING,
    "x_opencti_workflow_id": STRING,
    "objectLabel": STRING,
    "objectMarking": STRING,
    "createdBy": STRING,
    "creator_id": STRING,
    "x_opencti_score": NUMBER,
    "confidence": NUMBER,
    "pattern_type": STRING,
    "pattern": STRING,
    "x_opencti_main_observable_type": STRING,
    "indicator_types": STRING,
    "name": STRING,
    "description": STRING,
    "revoked": BOOL,
    "x_opencti_detection": BOOL,
    "valid_from": DATE,
    "valid_until": DATE,
    "created_at": DATE,
    "updated_at": DATE,
    "created": DATE,
    "modified": DATE,
}
#: Schema keys of other entity types: accepted, never a value on an indicator of the fake.
ABSENT_KEYS: dict[str, str] = {
    "objects": STRING,
    "objectAssignee": STRING,
    "objectParticipant": STRING,
    "objectOrganization": STRING,
    "killChainPhases": STRING,
    "externalReferences": STRING,
    "priority": STRING,
    "severity": STRING,
    "report_types": STRING,
    "note_types": STRING,
    "incident_type": STRING,
    "response_types": STRING,
    "information_types": STRING,
    "takedown_types": STRING,
    "value": STRING,
    "aliases": STRING,
    "x_opencti_aliases": STRING,
    "x_mitre_id": STRING,
    "x_opencti_reliability": STRING,
    "source_reliability": STRING,
    "published": DATE,
    "first_seen": DATE,
    "last_seen": DATE,
}
#: Relationship keys: accepted, match no indicator.
RELATIONSHIP_KEYS = frozenset(
    {
        "fromId",
        "toId",
        "fromTypes",
        "toTypes",
        "fromOrToId",
        "elementWithTargetTypes",
        "fromRole",
        "toRole",
        "regardingOf",
        "dynamicRegardingOf",
        "dynamicFrom",
        "dynamicTo",
        "connectedToId",
        "toSightingId",
    }
)
WORKFLOW_KEYS = frozenset({"workflow_id", "x_opencti_workflow_id"})
#: Keys whose candidates are the same for every indicator of the fake.
CONSTANT_KEYS = frozenset({"entity_type", "creator_id", *ABSENT_KEYS})
#: Keys a filter must hold alone.
_SINGLE_KEYS = frozenset({"ids", "entity_type", *WORKFLOW_KEYS, *RELATIONSHIP_KEYS})

_EMULATED = frozenset({"eq", "not_eq", "gt", "gte", "lt", "lte", "nil", "not_nil"})
_SUBSTRING = frozenset({"contains", "not_contains", "starts_with", "not_starts_with"})
_SUBSTRING |= {"ends_with", "not_ends_with"}
OPERATORS = _EMULATED | _SUBSTRING
#: The platform's FilterOperator enum: known, but not emulated beyond ``OPERATORS``.
_ENUM = OPERATORS | {"match", "wildcard", "not_wildcard", "search", "script", "within"}
_ENUM |= {"only_eq_to", "not_only_eq_to", "has_changed", "not_has_changed"}
MODES = frozenset({"and", "or"})
_RANGE = frozenset({"gt", "gte", "lt", "lte"})
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

Test = Callable[[list[Any]], bool]
Predicate = Callable[[Record], bool]


@dataclass(frozen=True)
class Leaf:
    """One key of one filter: ``test`` takes the record's candidates for ``key``; ``values`` are
    the filter's values as compared; ``never``: the key matches no indicator."""

    key: str
    test: Test
    values: tuple[Any, ...]
    never: bool = False


@dataclass(frozen=True)
class Group:
    """``and``/``or`` over leaves and groups; no parts: everything matches."""

    mode: str
    parts: tuple[Leaf | Group, ...]


MATCH_ALL = Group("and", ())


# --------------------------------------------------------------------------- candidates


def kind_of(key: str) -> str:
    return INDICATOR_KEYS.get(key) or ABSENT_KEYS.get(key) or STRING


def _raw(record: Record, key: str) -> list[Any]:
    match key:
        case "entity_type":
            return [*PARENT_TYPES, "Basic-Object"]
        case "ids":
            return [record["id"], record["standard_id"], *(record.get("stix_ids") or [])]
        case "id" | "internal_id":
            return [record["id"]]
        case "standard_id":
            return [record["standard_id"]]
        case "x_opencti_stix_ids":
            return list(record.get("stix_ids") or [])
        case "workflow_id" | "x_opencti_workflow_id":
            status = record.get("status_id")
            known = STATUSES.get(status) if status else None
            return [status, known.template_id] if known else [status] if status else []
        case "objectLabel":
            return [label_id(v) for v in record.get("labels") or []]
        case "objectMarking":
            return [i for m in record.get("markings") or [] for i in (marking_id(m), TLP[m][0])]
        case "createdBy":
            author = record.get("created_by")
            return [author_id(author), "identity--" + author_id(author)] if author else []
        case "creator_id":
            return [CREATOR_ID]
        case "x_opencti_score":
            return [record.get("score")]
        case "x_opencti_main_observable_type":
            return [record.get("main_observable_type")]
        case "revoked":
            return [bool(record.get("revoked"))]
        case "x_opencti_detection":
            return [bool(record.get("detection"))]
        case "indicator_types":
            return list(record.get("indicator_types") or [])
    return [record.get(key)] if key in INDICATOR_KEYS else []


def candidates(record: Record, key: str) -> list[Any]:
    """The record's values for ``key``, normalised for comparison (strings trimmed and lower
    case, numbers float, dates epoch ms); no value: an empty list."""
    return _normalise(kind_of(key), _raw(record, key), strict=False)


def _normalise(kind: str, values: list[Any], *, strict: bool) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value is None:
            continue
        if kind == STRING:
            text = str(value).strip().lower()
            if text or strict:
                out.append(text)
        elif kind == BOOL:
            out.append(str(value).lower() in ("true", "yes", "1") if strict else bool(value))
        elif kind == NUMBER:
            number = _float(value)
            if number is not None:
                out.append(number)
        else:
            instant = date_ms(value)
            if instant is not None:
                out.append(instant)
    return out


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def date_ms(value: Any) -> int | None:
    """Epoch ms of an ISO 8601 date or date-time (UTC when no offset); None when unreadable."""
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


# --------------------------------------------------------------------------- tests


def _substring(operator: str) -> Callable[[Any, list[Any]], bool]:
    def found(value: Any, have: list[Any]) -> bool:
        if not isinstance(value, str):
            return False
        if operator.endswith("contains"):
            return any(isinstance(h, str) and value in h for h in have)
        if operator.endswith("starts_with"):
            return any(isinstance(h, str) and h.startswith(value) for h in have)
        return any(isinstance(h, str) and h.endswith(value) for h in have)

    if operator.startswith("not_"):
        return lambda value, have: not found(value, have)
    return found


_COMPARE: dict[str, Callable[[Any, list[Any]], bool]] = {
    "gt": lambda v, have: any(h > v for h in have),
    "gte": lambda v, have: any(h >= v for h in have),
    "lt": lambda v, have: any(h < v for h in have),
    "lte": lambda v, have: any(h <= v for h in have),
}


def make_test(operator: str, mode: str, values: list[Any], *, none_of: bool = False) -> Test:
    """The candidate test of one filter (the platform's rules, see the module docstring);
    ``none_of``: ``not_eq`` excludes every value whatever the mode (``ids``)."""
    if operator == "nil" or (operator == "eq" and not values):
        return lambda have: not have
    if operator == "not_nil" or (operator == "not_eq" and not values):
        return lambda have: bool(have)
    if not values:
        return lambda have: False
    if operator in ("eq", "not_eq"):
        wanted = frozenset(values)
        if operator == "eq":
            if mode == "and":
                return lambda have: wanted.issubset(have)
            return lambda have: not wanted.isdisjoint(have)
        if mode == "and" or none_of:
            return lambda have: wanted.isdisjoint(have)
        return lambda have: not wanted.issubset(have)
    check = _COMPARE.get(operator) or _substring(operator)
    if mode == "and":
        return lambda have: all(check(v, have) for v in values)
    return lambda have: any(check(v, have) for v in values)


# --------------------------------------------------------------------------- checks


def _enum_error(value: Any, path: str, enum: str) -> GraphQLError:
    return GraphQLError(
        f'Variable "$filters" got invalid value {json.dumps(value)} at "{path}"; '
        f'Value {json.dumps(value)} does not exist in "{enum}" enum.',
        "BAD_USER_INPUT",
    )


def _keys_of(flt: dict[str, Any]) -> list[str]:
    keys = flt.get("key")
    return [keys] if isinstance(keys, str) else [str(k) for k in keys or []]


def _walk(group: FilterGroup, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every filter of a group, with its coercion path; checks shapes, modes and operators."""
    if not isinstance(group, dict):
        raise unsupported("Incorrect filters format", filter=json.dumps(group))
    mode = group.get("mode") or "and"
    if mode not in MODES:
        raise _enum_error(mode, f"{path}.mode", "FilterMode")
    filters, groups = group.get("filters") or [], group.get("filterGroups") or []
    if not isinstance(filters, list) or not isinstance(groups, list):
        raise unsupported("Incorrect filters format", filter=json.dumps(group))
    for n, flt in enumerate(filters):
        where = f"{path}.filters[{n}]"
        if not isinstance(flt, dict) or not _keys_of(flt):
            raise unsupported("Incorrect filters format", filter=json.dumps(group))
        if (flt.get("mode") or "or") not in MODES:
            raise _enum_error(flt.get("mode"), f"{where}.mode", "FilterMode")
        if (flt.get("operator") or "eq") not in _ENUM:
            raise _enum_error(flt.get("operator"), f"{where}.operator", "FilterOperator")
        yield flt, where
    for n, sub in enumerate(groups):
        yield from _walk(sub, f"{path}.filterGroups[{n}]")


def _check_keys(group: FilterGroup) -> None:
    known = INDICATOR_KEYS.keys() | ABSENT_KEYS.keys() | RELATIONSHIP_KEYS
    wrong: list[str] = []
    for flt, _ in _walk(group, "filters"):
        wrong += [k for k in _keys_of(flt) if k not in known and k not in wrong]
    if wrong:
        raise unsupported("Incorrect filter keys not existing in any schema definition", keys=wrong)


def _check_filter(keys: list[str], operator: str, mode: str) -> None:
    """The platform's refusals once keys are known (conversion and query building)."""
    if len(keys) > 1:
        if any(k in _SINGLE_KEYS for k in keys):
            raise unsupported("A filter with these multiple keys is not supported", keys=keys)
        if operator in ("nil", "not_nil"):
            raise unsupported("Filter must have only one field", keys=keys, operator=operator)
        if operator in _RANGE:
            raise unsupported("Range filter must have only one field", keys=keys)
    if operator not in OPERATORS:
        raise unsupported("Not supported filter operator", filterOperator=operator)
    if keys[0] == "ids":
        if mode == "and":
            raise unsupported(
                "Unsupported filter: 'And' operator between values of a filter with key = "
                "'ids' is not supported"
            )
        if operator not in ("eq", "not_eq", "nil", "not_nil"):
            raise unsupported("Range filter must have only one field", keys=["ids"])
    if keys[0] in WORKFLOW_KEYS and operator not in ("eq", "not_eq", "nil", "not_nil"):
        raise unsupported(
            "The operators supported for a filter with key=workflow_id is not supported.",
            operator=operator,
        )


# --------------------------------------------------------------------------- compile


def _leaf(key: str, operator: str, mode: str, raw: list[Any]) -> Leaf:
    kind = kind_of(key)
    if key == "objectLabel":
        raw = [v if _UUID.match(str(v).strip()) else label_id(str(v).strip().lower()) for v in raw]
    values = _normalise(kind, raw, strict=True)
    if operator in _SUBSTRING and kind != STRING:
        values = []  # substring tests never match numbers, booleans or dates
    test = make_test(operator, mode, values, none_of=key == "ids")
    never = key in RELATIONSHIP_KEYS or (key == "ids" and operator in ("nil", "not_nil"))
    return Leaf(key, test, tuple(values), never=never)


def _compile(group: FilterGroup) -> Group:
    parts: list[Leaf | Group] = []
    for flt in group.get("filters") or []:
        keys = _keys_of(flt)
        operator = flt.get("operator") or "eq"
        mode = flt.get("mode") or "or"
        _check_filter(keys, operator, mode)
        raw = list(flt.get("values") or [])
        leaves = tuple(_leaf(k, operator, mode, raw) for k in keys)
        parts.append(leaves[0] if len(leaves) == 1 else Group("or", leaves))
    for sub in group.get("filterGroups") or []:
        compiled = _compile(sub)
        if compiled.parts:
            parts.append(compiled)
    return Group(group.get("mode") or "and", tuple(parts))


@functools.lru_cache(maxsize=256)
def _compile_text(text: str) -> Group:
    group = json.loads(text)
    for _ in _walk(group, "filters"):
        pass
    _check_keys(group)
    return _compile(group)


def compile_filters(group: FilterGroup | None) -> Group:
    """A FilterGroup checked and compiled (cached by content); GraphQLError as the platform
    answers for a bad key, operator or mode."""
    if not group:
        return MATCH_ALL
    return _compile_text(json.dumps(group, sort_keys=True))


def predicate(compiled: Leaf | Group) -> Predicate:
    """A compiled tree as a test of one record."""
    if isinstance(compiled, Leaf):
        if compiled.never:
            return lambda record: False
        key, test = compiled.key, compiled.test
        return lambda record: test(candidates(record, key))
    if not compiled.parts:
        return lambda record: True
    parts = [predicate(p) for p in compiled.parts]
    if compiled.mode == "and":
        return lambda record: all(p(record) for p in parts)
    return lambda record: any(p(record) for p in parts)


def compile_group(group: FilterGroup | None) -> Predicate:
    """An OpenCTI FilterGroup as one predicate over records, compiled once."""
    return predicate(compile_filters(group))


def group_matches(record: Record, group: FilterGroup | None) -> bool:
    """Evaluate an OpenCTI FilterGroup on one record."""
    return compile_group(group)(record)


def validate_group(group: FilterGroup | None) -> None:
    """Reject unknown keys, operators or modes even when there is no record to test."""
    compile_filters(group)


# --------------------------------------------------------------------------- sightings

#: Sighting filter keys → the sighting record keys holding their ids.
SIGHTING_KEYS = {"fromId": ("from_id", "from_standard_id"), "toId": ("to_id", "to_standard_id")}


def sighting_predicate(group: FilterGroup | None) -> Predicate:
    """A FilterGroup over sightings (``fromId``, ``toId``) as one predicate; GraphQLError for a
    key or operator the fake does not emulate on sightings."""
    if not group:
        return lambda sighting: True
    wrong: list[str] = []
    for flt, _ in _walk(group, "filters"):
        wrong += [k for k in _keys_of(flt) if k not in SIGHTING_KEYS and k not in wrong]
    if wrong:
        raise unsupported("Filter keys not emulated on sightings by the fake", keys=wrong)
    compiled = _sighting_group(group)
    return compiled if compiled is not None else lambda sighting: True


def _sighting_group(group: FilterGroup) -> Predicate | None:
    parts: list[Predicate] = []
    for flt in group.get("filters") or []:
        operator = flt.get("operator") or "eq"
        if operator not in ("eq", "not_eq"):
            raise unsupported("Not supported filter operator", filterOperator=operator)
        values = _normalise(STRING, list(flt.get("values") or []), strict=True)
        test = make_test(operator, flt.get("mode") or "or", values)
        fields = [f for key in _keys_of(flt) for f in SIGHTING_KEYS[key]]
        parts.append(_sighting_test(fields, test))
    for sub in group.get("filterGroups") or []:
        compiled = _sighting_group(sub)
        if compiled is not None:
            parts.append(compiled)
    if not parts:
        return None
    if (group.get("mode") or "and") == "and":
        return lambda sighting: all(p(sighting) for p in parts)
    return lambda sighting: any(p(sighting) for p in parts)


def _sighting_test(fields: list[str], test: Test) -> Predicate:
    def matches(sighting: Record) -> bool:
        have = [str(sighting[f]).strip().lower() for f in fields if sighting.get(f)]
        return test(have)

    return matches
