"""The tolerant readers of both OpenCTI renderings: a GraphQL listing node
(``indicator_from_graphql``) and a stream event's STIX 2.1 object with the OpenCTI extension
(``indicator_from_stix``), each read into one ``OpenCTIIndicator``.

Total: a shape they do not understand becomes a ``Skipped`` (``no_value``), never an exception.
They only read and normalise fields: finding, canonicalising and validating the deployable
values is the mapper's job. No I/O.

Markings and author (what policy rules match on): a GraphQL node carries them whole
(``objectMarking { id standard_id definition }``, ``createdBy { id standard_id name }``); a
STIX object carries only their ids (``object_marking_refs``, ``created_by_ref``), so the TLP
markings, whose STIX ids the STIX 2.1 specification fixes, are given their definitions here and
other markings and the author are known by id only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reconciler.mapping.models import ObservableValue, OpenCTIIndicator
from reconciler.mapping.values import _canonical_hash_name
from reconciler.model import Skipped, SkipReason, parse_datetime

__all__ = ["OCTI_EXTENSION", "indicator_from_graphql", "indicator_from_stix"]

#: The OpenCTI property extension inside a stream event's STIX object.
OCTI_EXTENSION = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"

#: The TLP marking definitions by the STIX ids the STIX 2.1 specification gives them (OpenCTI
#: keeps these ids; ``TLP:WHITE`` is called ``TLP:CLEAR`` there).
_TLP_BY_STIX_ID = {
    "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9": "TLP:CLEAR",
    "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da": "TLP:GREEN",
    "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82": "TLP:AMBER",
    "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed": "TLP:RED",
}


def _opt_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 1e12 else None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d{1,12}", text):
            return int(text)
    return None


def _opt_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    return None


def _opt_dt(value: Any) -> datetime | None:
    if not isinstance(value, str | datetime):
        return None
    try:
        return parse_datetime(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _read_hashes(raw: Any) -> dict[str, str]:
    """Hashes as a dict ``{canonical algorithm: value}``, from the STIX object form
    (``{"SHA-256": ...}``) or the GraphQL list form (``[{algorithm, hash}]``)."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, Mapping):
                pairs.append((item.get("algorithm"), item.get("hash")))
    hashes: dict[str, str] = {}
    for name, value in pairs:
        if isinstance(name, str) and isinstance(value, str) and value.strip():
            # First occurrence wins so that differently spelled duplicates stay deterministic.
            hashes.setdefault(_canonical_hash_name(name), value)
    return hashes


def _read_observable_values(raw: Any) -> tuple[ObservableValue, ...]:
    if not isinstance(raw, list | tuple):
        return ()
    values: list[ObservableValue] = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        obs_type = _opt_str(item.get("type"))
        if not obs_type:
            continue
        values.append(
            ObservableValue(
                type=obs_type,
                value=_opt_str(item.get("value")),
                hashes=_read_hashes(item.get("hashes")),
            )
        )
    return tuple(values)


def _read_labels(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple):
        return ()
    labels: list[str] = []
    for item in raw:
        value = item.get("value") if isinstance(item, Mapping) else item
        if isinstance(value, str) and value.strip():
            labels.append(value.strip())
    return tuple(labels)


def _items(raw: Any) -> list[Mapping[str, Any]]:
    """The objects of a GraphQL list, given as a list or as ``{edges: [{node}]}``."""
    if isinstance(raw, Mapping):
        edges = raw.get("edges")
        raw = (
            [e.get("node") for e in edges if isinstance(e, Mapping)]
            if isinstance(edges, list)
            else []
        )
    if not isinstance(raw, list | tuple):
        return []
    return [item for item in raw if isinstance(item, Mapping)]


def _ids(item: Mapping[str, Any]) -> list[str]:
    return [
        v.strip()
        for v in (item.get("id"), item.get("standard_id"))
        if isinstance(v, str) and v.strip()
    ]


def _read_markings(raw: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(definitions, ids) of a GraphQL ``objectMarking`` list; a marking without a definition
    is shown by its first id."""
    names: list[str] = []
    ids: list[str] = []
    for item in _items(raw):
        own = _ids(item)
        definition = item.get("definition")
        if isinstance(definition, str) and definition.strip():
            names.append(definition.strip())
        elif own:
            names.append(own[0])
        ids.extend(own)
    return tuple(names), tuple(ids)


def _read_author(raw: Any) -> tuple[str | None, tuple[str, ...]]:
    """(name, ids) of a GraphQL ``createdBy`` object."""
    if not isinstance(raw, Mapping):
        return None, ()
    name = raw.get("name")
    shown = name.strip() if isinstance(name, str) and name.strip() else None
    return shown, tuple(_ids(raw))


def _stix_markings(raw: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(definitions, ids) of STIX ``object_marking_refs``: TLP ids named, others by id."""
    if not isinstance(raw, list | tuple):
        return (), ()
    ids = tuple(ref.strip() for ref in raw if isinstance(ref, str) and ref.strip())
    return tuple(_TLP_BY_STIX_ID.get(ref, ref) for ref in ids), ids


def _invalid_input(opencti_id: Any, detail: str, name: Any = None) -> Skipped:
    return Skipped(
        opencti_id=opencti_id if isinstance(opencti_id, str) else "",
        reason=SkipReason.NO_VALUE,
        detail=detail,
        name=name if isinstance(name, str) else None,
    )


def indicator_from_graphql(node: Mapping[str, Any]) -> OpenCTIIndicator | Skipped:
    """Read a pycti listing node (the reconciler's lean selection). Never raises."""
    try:
        return _from_graphql(node)
    except Exception as exc:  # totality: a shape we did not foresee is a skip, not a crash
        return _invalid_input("", f"unreadable GraphQL node: {type(exc).__name__}")


def _from_graphql(node: Any) -> OpenCTIIndicator | Skipped:
    if not isinstance(node, Mapping):
        return _invalid_input("", "GraphQL node is not an object")
    entity_type = node.get("entity_type")
    ident = node.get("id")
    if entity_type is not None and entity_type != "Indicator":
        return _invalid_input(ident, f"not an indicator: {entity_type!r}", node.get("name"))
    if not isinstance(ident, str) or not ident.strip():
        return _invalid_input("", "indicator without an OpenCTI id", node.get("name"))
    markings, marking_ids = _read_markings(node.get("objectMarking"))
    author, author_ids = _read_author(node.get("createdBy"))
    return OpenCTIIndicator(
        id=ident.strip(),
        standard_id=_opt_str(node.get("standard_id")),
        name=_opt_str(node.get("name")),
        description=_opt_str(node.get("description")),
        pattern=_opt_str(node.get("pattern")),
        pattern_type=_opt_str(node.get("pattern_type")),
        score=_opt_int(node.get("x_opencti_score")),
        revoked=_opt_bool(node.get("revoked")) or False,
        valid_from=_opt_dt(node.get("valid_from")),
        valid_until=_opt_dt(node.get("valid_until")),
        created_at=_opt_dt(node.get("created_at")),
        updated_at=_opt_dt(node.get("updated_at")),
        labels=_read_labels(node.get("objectLabel")),
        main_observable_type=_opt_str(node.get("x_opencti_main_observable_type")),
        observable_values=_read_observable_values(node.get("x_opencti_observable_values")),
        detection=_opt_bool(node.get("x_opencti_detection")),
        markings=markings,
        marking_ids=marking_ids,
        author=author,
        author_ids=author_ids,
    )


def indicator_from_stix(obj: Mapping[str, Any]) -> OpenCTIIndicator | Skipped:
    """Read a stream event's STIX 2.1 indicator (``data`` of the envelope) with the OpenCTI
    extension. Omitted fields take defaults. Never raises."""
    try:
        return _from_stix(obj)
    except Exception as exc:  # totality, see indicator_from_graphql
        return _invalid_input("", f"unreadable STIX object: {type(exc).__name__}")


def _from_stix(obj: Any) -> OpenCTIIndicator | Skipped:
    if not isinstance(obj, Mapping):
        return _invalid_input("", "STIX object is not an object")
    extensions = obj.get("extensions")
    ext_raw = extensions.get(OCTI_EXTENSION) if isinstance(extensions, Mapping) else None
    ext: Mapping[str, Any] = ext_raw if isinstance(ext_raw, Mapping) else {}
    stix_id = _opt_str(obj.get("id"))
    if obj.get("type") != "indicator":
        return _invalid_input(stix_id, f"not an indicator: {obj.get('type')!r}", obj.get("name"))
    ident = ext.get("id")
    if not isinstance(ident, str) or not ident.strip():
        return _invalid_input(stix_id, "indicator without an OpenCTI id", obj.get("name"))

    def pick(ext_key: str, top_key: str) -> Any:
        # The extension is authoritative; x_opencti_* top-level keys are older renderings.
        value = ext.get(ext_key)
        return obj.get(top_key) if value is None else value

    markings, marking_ids = _stix_markings(obj.get("object_marking_refs"))
    author_refs = (obj.get("created_by_ref"), ext.get("created_by_ref_id"))
    author_ids = tuple(
        dict.fromkeys(r.strip() for r in author_refs if isinstance(r, str) and r.strip())
    )
    return OpenCTIIndicator(
        id=ident.strip(),
        standard_id=stix_id,
        name=_opt_str(obj.get("name")),
        description=_opt_str(obj.get("description")),
        pattern=_opt_str(obj.get("pattern")),
        pattern_type=_opt_str(obj.get("pattern_type")),
        score=_opt_int(pick("score", "x_opencti_score")),
        revoked=_opt_bool(obj.get("revoked")) or False,
        valid_from=_opt_dt(obj.get("valid_from")),
        valid_until=_opt_dt(obj.get("valid_until")),
        created_at=_opt_dt(ext.get("created_at")),
        updated_at=_opt_dt(ext.get("updated_at")),
        labels=_read_labels(obj.get("labels")),
        main_observable_type=_opt_str(
            pick("main_observable_type", "x_opencti_main_observable_type")
        ),
        observable_values=_read_observable_values(
            pick("observable_values", "x_opencti_observable_values")
        ),
        detection=_opt_bool(pick("detection", "x_opencti_detection")),
        markings=markings,
        marking_ids=marking_ids,
        author_ids=author_ids,
    )
