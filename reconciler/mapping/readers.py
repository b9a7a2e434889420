"""The tolerant readers of both OpenCTI renderings: a GraphQL listing node
(``indicator_from_graphql``) and a stream event's STIX 2.1 object with the OpenCTI extension
(``indicator_from_stix``), each read into one ``OpenCTIIndicator``.

Total: a shape they do not understand becomes a ``Skipped`` (``no_value``), never an exception.
They only read and normalise fields: finding, canonicalising and validating the deployable
values is the mapper's job. No I/O.
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
    )
