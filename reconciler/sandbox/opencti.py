"""A fake OpenCTI platform: GraphQL and live stream over real HTTP on 127.0.0.1.

Owns just enough of OpenCTI for pycti's ``OpenCTIApiClient`` and ``OpenCTIConnectorHelper``
(STREAM connector) to work against it unchanged: ``POST /graphql`` (``about``,
``registerConnector``, ``pingConnector``, ``deleteConnector``, ``streamCollection``,
``indicators``, ``indicator``) and ``GET /stream/{id}`` (server-sent events with ids, heartbeats,
``Last-Event-ID`` resume, first-run recovery, visibility translation against the stream filters).
GraphQL answers carry the top-level fields a query selects (sub-selections come whole), like
the real server; ``toStix`` nodes carry the same STIX rendering as the stream.
Built from ``shared/reference/opencti-pycti.md``, never from the reconciler's code: it imports
nothing from the rest of ``reconciler``. Test knobs fail listing pages, drop stream connections
and turn the stream off.

Clock: record dates of loaded datasets come from the dataset; indicators created or changed
through the emulator take the wall clock (like Redis stream ids), kept strictly increasing.

``stream_enabled = False`` makes new stream connections answer 410 (the platform's "stream
stopped"); it does not drop open ones — call :meth:`OpenCTIEmulator.disconnect_streams` for that.
pycti treats a 410 on reconnect like a dead server (it kills its process), so tests that flip it
must stop their listener first.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reconciler.sandbox.dataset import (
    format_date,
    generate_indicators,
    label_id,
    observables_from_pattern,
    parse_date,
)

__all__ = ["STIX_EXT_OCTI", "GraphQLError", "OpenCTIEmulator", "main"]

Record = dict[str, Any]
FilterGroup = dict[str, Any]

#: The OpenCTI property extension of STIX objects (pycti ``STIX_EXT_OCTI``).
STIX_EXT_OCTI = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"
PLATFORM_VERSION = "7.261026.0"
_REQUEST_LOG_SIZE = 100_000

# First root field of a GraphQL document (pycti sends no operationName), reference §5.2.
_ROOT_FIELD = re.compile(r"^\s*(?:(?:query|mutation)\b[^{]*)?\{\s*([A-Za-z_]\w*)")
_NAMESPACE = uuid.UUID("0d7f3a52-8c1e-4b9a-a6f2-5e3c9d1b7a44")
_CREATOR_ID = "88ec0c6a-13ce-5e39-b486-354fe4a7084f"  # the platform admin, creator of everything
_PARENT_TYPES = ("Indicator", "Stix-Domain-Object", "Stix-Core-Object", "Stix-Object")
_TLP = {
    "TLP:CLEAR": ("marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9", "#ffffff", 1),
    "TLP:GREEN": ("marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da", "#2e7d32", 2),
    "TLP:AMBER": ("marking-definition--f88d31f6-486f-44da-b317-01333bde0b82", "#d84315", 3),
    "TLP:RED": ("marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed", "#c62828", 4),
}
# IndicatorsOrdering values we sort on → record key.
_ORDERINGS = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "created": "created",
    "modified": "modified",
    "valid_from": "valid_from",
    "valid_until": "valid_until",
    "x_opencti_score": "score",
    "confidence": "confidence",
    "name": "name",
    "pattern_type": "pattern_type",
    "id": "id",
    "_score": "created_at",
}
# Aliases accepted by create/update_indicator for record keys.
_FIELD_ALIASES = {
    "x_opencti_score": "score",
    "x_opencti_detection": "detection",
    "x_opencti_main_observable_type": "main_observable_type",
}
_RECORD_KEYS = frozenset(
    [
        "id",
        "standard_id",
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
# Record key → (STIX JSON-patch path, label used in event messages).
_PATCH_PATHS = {
    "score": (f"/extensions/{STIX_EXT_OCTI}/score", "Score"),
    "detection": (f"/extensions/{STIX_EXT_OCTI}/detection", "Detection"),
    "main_observable_type": (f"/extensions/{STIX_EXT_OCTI}/main_observable_type", "Type"),
    "observable_values": (f"/extensions/{STIX_EXT_OCTI}/observable_values", "Observables"),
    "labels": ("/labels", "Label"),
    "markings": ("/object_marking_refs", "Marking"),
    "created_by": ("/created_by_ref", "Author"),
}


def _uuid5(kind: str, value: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{value}"))


def author_id(name: str) -> str:
    """Deterministic internal id of an author identity."""
    return _uuid5("identity", name)


def marking_id(name: str) -> str:
    """Deterministic internal id of a TLP marking definition."""
    return _uuid5("marking", name)


def _label_color(value: str) -> str:
    return "#" + uuid.uuid5(_NAMESPACE, "color:" + value).hex[:6]


def _compact(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop null and empty fields, as OpenCTI's STIX converter does."""
    return {k: v for k, v in obj.items() if v is not None and v != "" and v != [] and v != {}}


def _ms(iso: str) -> int:
    return int(parse_date(iso).timestamp() * 1000)


def _parse_recover(text: str | None) -> int | None:
    """Epoch ms of a ``recover`` date; unreadable dates are ignored (live only)."""
    if not text:
        return None
    try:
        return _ms(text)
    except ValueError:
        return None


def _parse_event_id(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    head, _, tail = text.strip().partition("-")
    try:
        return int(head), int(tail or 0)
    except ValueError:
        return None


class GraphQLError(Exception):
    """A GraphQL error answered as HTTP 200 ``{"data": null, "errors": [...]}``."""

    def __init__(self, message: str, code: str = "FUNCTIONAL_ERROR") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- filters ------------------------------------------------------------------------------------

_NUMERIC_KEYS = frozenset({"x_opencti_score", "confidence"})
_BOOL_KEYS = frozenset({"revoked", "x_opencti_detection"})
_OPERATORS = frozenset({"eq", "not_eq", "gt", "gte", "lt", "lte", "nil", "not_nil"})


def _filter_values(record: Record, key: str) -> list[Any]:
    """Values of ``record`` for a filter key (a list; empty = no value)."""
    value: Any
    match key:
        case "entity_type":
            return list(_PARENT_TYPES)
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
            return [_CREATOR_ID]
        case "id":
            return [record["id"], record["standard_id"]]
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


def _filter_matches(record: Record, flt: dict[str, Any]) -> bool:
    keys = flt.get("key")
    key_list = [keys] if isinstance(keys, str) else list(keys or [])
    operator = flt.get("operator") or "eq"
    if operator not in _OPERATORS:
        raise GraphQLError(f"unsupported filter operator: {operator}", "UNSUPPORTED_ERROR")
    mode = (flt.get("mode") or "or").lower()
    wanted = [str(v) for v in flt.get("values") or []]
    results = []
    for key in key_list:
        have = _filter_values(record, key)
        if operator == "nil":
            results.append(not have)
            continue
        if operator == "not_nil":
            results.append(bool(have))
            continue
        if not wanted:
            results.append(True)
            continue
        if operator == "not_eq":
            tests = [all(not _compare(key, h, "eq", w) for h in have) for w in wanted]
        else:
            tests = [any(_compare(key, h, operator, w) for h in have) for w in wanted]
        results.append(all(tests) if mode == "and" else any(tests))
    return any(results) if results else True


def group_matches(record: Record, group: FilterGroup | None) -> bool:
    """Evaluate an OpenCTI FilterGroup (5.12+ format) on a record."""
    if not group:
        return True
    mode = (group.get("mode") or "and").lower()
    results = [_filter_matches(record, f) for f in group.get("filters") or []]
    results += [group_matches(record, g) for g in group.get("filterGroups") or []]
    if not results:
        return True
    return all(results) if mode == "and" else any(results)


def _validate_group(group: FilterGroup | None) -> None:
    """Reject unknown keys or operators even when there is no record to test."""
    if not group:
        return
    probe: Record = {"id": "", "standard_id": ""}
    group_matches(probe, group)


# --- renderings -----------------------------------------------------------------------------------


def graphql_node(record: Record) -> dict[str, Any]:
    """The record as the GraphQL ``Indicator`` node (full, like pycti's default selection)."""
    author = record.get("created_by")
    observable_values = []
    observables = []
    for ov in record.get("observable_values") or []:
        hashes = ov.get("hashes")
        observable_values.append(
            {
                "type": ov["type"],
                "value": ov.get("value"),
                "hashes": (
                    [{"algorithm": a, "hash": h} for a, h in hashes.items()] if hashes else None
                ),
            }
        )
        shown = ov.get("value") or next(iter((hashes or {}).values()), "")
        observables.append(
            {
                "node": {
                    "id": _uuid5("observable", f"{ov['type']}:{shown}"),
                    "entity_type": ov["type"],
                    "observable_value": shown,
                }
            }
        )
    return {
        "id": record["id"],
        "standard_id": record["standard_id"],
        "entity_type": "Indicator",
        "parent_types": list(_PARENT_TYPES[1:]),
        "spec_version": "2.1",
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
        "createdBy": (
            {
                "id": author_id(author),
                "standard_id": "identity--" + author_id(author),
                "entity_type": "Organization",
                "name": author,
                "identity_class": "organization",
            }
            if author
            else None
        ),
        "creators": [{"id": _CREATOR_ID, "name": "admin"}],
        "objectMarking": [
            {
                "id": marking_id(name),
                "standard_id": _TLP[name][0],
                "entity_type": "Marking-Definition",
                "definition_type": "TLP",
                "definition": name,
                "x_opencti_color": _TLP[name][1],
                "x_opencti_order": _TLP[name][2],
            }
            for name in record.get("markings") or []
        ],
        "objectLabel": [
            {"id": label_id(v), "value": v, "color": _label_color(v)}
            for v in record.get("labels") or []
        ],
        "externalReferences": {"edges": []},
        "killChainPhases": [],
        "revoked": bool(record.get("revoked")),
        "confidence": record.get("confidence"),
        "created": record.get("created"),
        "modified": record.get("modified"),
        "pattern_type": record.get("pattern_type"),
        "pattern_version": record.get("pattern_version"),
        "pattern": record.get("pattern"),
        "name": record.get("name"),
        "description": record.get("description") or None,
        "indicator_types": list(record.get("indicator_types") or []) or None,
        "valid_from": record.get("valid_from"),
        "valid_until": record.get("valid_until"),
        "x_opencti_score": record.get("score"),
        "x_opencti_detection": bool(record.get("detection")),
        "x_opencti_main_observable_type": record.get("main_observable_type"),
        "x_opencti_observable_values": observable_values or None,
        "x_mitre_platforms": None,
        "observables": {"edges": observables},
    }


def stix_object(record: Record) -> dict[str, Any]:
    """The record as the STIX 2.1 indicator of stream events (null and empty fields omitted)."""
    author = record.get("created_by")
    labels = list(record.get("labels") or [])
    extension = _compact(
        {
            "extension_type": "property-extension",
            "id": record["id"],
            "type": "Indicator",
            "created_at": record["created_at"],
            "updated_at": record["updated_at"],
            "is_inferred": False,
            "creator_ids": [_CREATOR_ID],
            "labels_ids": [label_id(v) for v in labels],
            "created_by_ref_id": author_id(author) if author else None,
            "score": record.get("score"),
            "detection": bool(record.get("detection")),
            "main_observable_type": record.get("main_observable_type"),
            "observable_values": [dict(ov) for ov in record.get("observable_values") or []],
        }
    )
    return _compact(
        {
            "id": record["standard_id"],
            "spec_version": "2.1",
            "type": "indicator",
            "created": record.get("created"),
            "modified": record.get("modified"),
            "revoked": bool(record.get("revoked")),
            "confidence": record.get("confidence"),
            "lang": "en",
            "labels": labels,
            "object_marking_refs": [_TLP[m][0] for m in record.get("markings") or []],
            "created_by_ref": "identity--" + author_id(author) if author else None,
            "name": record.get("name"),
            "description": record.get("description"),
            "indicator_types": list(record.get("indicator_types") or []),
            "pattern": record.get("pattern"),
            "pattern_type": record.get("pattern_type"),
            "pattern_version": record.get("pattern_version"),
            "valid_from": record.get("valid_from"),
            "valid_until": record.get("valid_until"),
            "extensions": {STIX_EXT_OCTI: extension},
        }
    )


# --- state ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    key: tuple[int, int]
    event: str  # SSE event name after visibility translation
    payload: str  # JSON envelope

    @property
    def id(self) -> str:
        return f"{self.key[0]}-{self.key[1]}"


@dataclass
class _Connection:
    closed: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    sock: socket.socket | None = None

    def close(self) -> None:
        """Mark closed and cut the socket, even in the middle of a large write."""
        self.closed = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


@dataclass
class _Listing:
    ids: list[str]
    index: dict[str, int]
    sort_keys: list[tuple[Any, ...]]


class OpenCTIEmulator:
    """A fake OpenCTI on 127.0.0.1; ``start()`` it (or use ``with``) and point pycti at ``url``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "opencti-token",
        stream_id: str = "stream-1",
        stream_filters: FilterGroup | None = None,
        heartbeat_interval: float = 0.5,
        retry_ms: int | None = 200,
        max_page_size: int = 5000,
        seed: int = 0,
        event_log_size: int = 100_000,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.stream_id = stream_id
        self.stream_filters = stream_filters
        self.stream_name = "Live indicators"
        self.heartbeat_interval = heartbeat_interval
        self.retry_ms = retry_ms
        self.max_page_size = max_page_size
        self.stream_enabled = True
        self.requests: list[dict[str, Any]] = []
        self.connector_states: dict[str, str | None] = {}
        self._rng = random.Random(seed)
        self._cond = threading.Condition(threading.RLock())
        self._records: dict[str, Record] = {}
        # Rendered node JSON by selected top-level fields (None = all), then by indicator id.
        self._node_cache: dict[frozenset[str] | None, dict[str, str]] = {}
        self._stix_cache: dict[str, str] = {}
        self._listing_cache: dict[tuple[str, str, str, str], _Listing] = {}
        self._version = 0
        self._events: list[_Event] = []
        self._event_keys: list[tuple[int, int]] = []
        self._event_log_size = event_log_size
        self._head: tuple[int, int] = (0, 0)
        self._connections: list[_Connection] = []
        self._page_requests = 0
        self._fail_pages: dict[int, str] = {}
        self._fail_after: tuple[int, str] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> OpenCTIEmulator:
        """Bind and serve in a daemon thread; returns self."""
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits up to one poll interval
            name="opencti-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close stream connections and stop serving."""
        self.disconnect_streams()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenCTIEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- data -----------------------------------------------------------------------------------

    def load(self, records: Iterable[Record]) -> None:
        """Bulk load dataset records (no stream events)."""
        with self._cond:
            for record in records:
                self._records[record["id"]] = dict(record)
                self._invalidate(record["id"])

    def indicators(self) -> list[Record]:
        """Current records (copies)."""
        with self._cond:
            return [dict(r) for r in self._records.values()]

    def create_indicator(self, **fields: Any) -> Record:
        """Create an indicator (``pattern`` required) and emit a ``create`` event."""
        fields = self._normalise(fields)
        if "pattern" not in fields:
            raise ValueError("create_indicator needs a pattern")
        with self._cond:
            key = self._next_key()
            now = format_date(datetime.fromtimestamp(key[0] / 1000, UTC))
            observables = observables_from_pattern(fields["pattern"])
            first = observables[0] if observables else {}
            record: Record = {
                "id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                "standard_id": "indicator--" + str(uuid.UUID(int=self._rng.getrandbits(128))),
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
            self._records[record["id"]] = record
            self._invalidate(record["id"])
            self._emit(
                key, "create", None, record, message=f"creates a Indicator `{record['name']}`"
            )
            return dict(record)

    def update_indicator(self, indicator_id: str, **fields: Any) -> Record:
        """Change fields and emit ``update`` (or ``create``/``delete`` when visibility changes)."""
        fields = self._normalise(fields)
        with self._cond:
            before = self._records.get(indicator_id)
            if before is None:
                raise KeyError(f"no indicator {indicator_id}")
            after = dict(before)
            after.update(fields)
            if "pattern" in fields and "observable_values" not in fields:
                after["observable_values"] = observables_from_pattern(fields["pattern"])
                if after["observable_values"] and "main_observable_type" not in fields:
                    after["main_observable_type"] = after["observable_values"][0]["type"]
            key = self._next_key()
            now = format_date(datetime.fromtimestamp(key[0] / 1000, UTC))
            after["updated_at"] = after["modified"] = now
            patch, reverse, message = self._patches(before, after)
            self._records[indicator_id] = after
            self._invalidate(indicator_id)
            self._emit(key, "update", before, after, message=message, context=(patch, reverse))
            return dict(after)

    def revoke_indicator(self, indicator_id: str) -> Record:
        """Set ``revoked = true`` (an update)."""
        return self.update_indicator(indicator_id, revoked=True)

    def delete_indicator(self, indicator_id: str) -> None:
        """Delete and emit ``delete`` carrying the last full object."""
        with self._cond:
            before = self._records.pop(indicator_id, None)
            if before is None:
                raise KeyError(f"no indicator {indicator_id}")
            stix = self._stix_json(before)
            self._invalidate(indicator_id)
            key = self._next_key()
            self._emit(
                key,
                "delete",
                before,
                None,
                message=f"deletes a Indicator `{before['name']}`",
                stix_text=stix,
            )

    # --- knobs ----------------------------------------------------------------------------------

    def fail_page(self, n: int, message: str = "Simulated listing failure") -> None:
        """The n-th (1-based) subsequent ``indicators`` request answers a GraphQL error."""
        with self._cond:
            self._fail_pages[self._page_requests + n] = message

    def fail_after_pages(self, n: int, message: str = "Simulated listing failure") -> None:
        """Every ``indicators`` request after the next ``n`` answers a GraphQL error."""
        with self._cond:
            self._fail_after = (self._page_requests + n, message)

    def clear_failures(self) -> None:
        with self._cond:
            self._fail_pages.clear()
            self._fail_after = None

    def disconnect_streams(self) -> None:
        """Close every open stream connection now; clients reconnect with ``Last-Event-ID``."""
        with self._cond:
            for conn in self._connections:
                conn.close()
            self._cond.notify_all()

    def counts(self) -> dict[str, int]:
        """Requests served, by GraphQL root field or ``stream``."""
        with self._cond:
            return dict(Counter(r["field"] for r in self.requests))

    def events(self) -> list[dict[str, Any]]:
        """The stream's event log (after visibility translation): ``{id, event, data}``."""
        with self._cond:
            return [
                {"id": e.id, "event": e.event, "data": json.loads(e.payload)} for e in self._events
            ]

    def open_streams(self) -> int:
        """Stream connections currently open."""
        with self._cond:
            return sum(1 for c in self._connections if not c.closed)

    @staticmethod
    def label_id(value: str) -> str:
        return label_id(value)

    @staticmethod
    def graphql_node(record: Record) -> dict[str, Any]:
        return graphql_node(record)

    @staticmethod
    def stix_object(record: Record) -> dict[str, Any]:
        return stix_object(record)

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _normalise(fields: dict[str, Any]) -> dict[str, Any]:
        out = {_FIELD_ALIASES.get(k, k): v for k, v in fields.items()}
        unknown = set(out) - _RECORD_KEYS
        if unknown:
            raise ValueError(f"unknown indicator fields: {sorted(unknown)}")
        return out

    def _log_request(self, entry: dict[str, Any]) -> None:
        with self._cond:
            self.requests.append(entry)
            if len(self.requests) > _REQUEST_LOG_SIZE:  # a long-running demo must not grow forever
                del self.requests[: _REQUEST_LOG_SIZE // 2]

    def _invalidate(self, indicator_id: str) -> None:
        for cache in self._node_cache.values():
            cache.pop(indicator_id, None)
        self._stix_cache.pop(indicator_id, None)
        self._listing_cache.clear()
        self._version += 1

    def _node_json(self, record: Record, fields: frozenset[str] | None = None) -> str:
        cache = self._node_cache.setdefault(fields, {})
        text = cache.get(record["id"])
        if text is None:
            node: dict[str, Any]
            if fields is not None and "toStix" in fields:
                node = {"toStix": self._stix_json(record)}
            else:
                node = graphql_node(record)
                if fields is not None:
                    node = {k: v for k, v in node.items() if k in fields}
            text = json.dumps(node, ensure_ascii=False)
            cache[record["id"]] = text
        return text

    def _stix_json(self, record: Record) -> str:
        text = self._stix_cache.get(record["id"])
        if text is None:
            text = json.dumps(stix_object(record), ensure_ascii=False)
            self._stix_cache[record["id"]] = text
        return text

    def _next_key(self) -> tuple[int, int]:
        """Next stream id: wall-clock ms, strictly after every id handed out so far."""
        now_ms = int(time.time() * 1000)
        last_ms, last_seq = self._head
        return (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)

    def _visible(self, record: Record | None) -> bool:
        try:
            return record is not None and group_matches(record, self.stream_filters)
        except GraphQLError:
            return False

    def _patches(
        self, before: Record, after: Record
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        old_stix, new_stix = stix_object(before), stix_object(after)
        old_ext, new_ext = (
            old_stix["extensions"][STIX_EXT_OCTI],
            new_stix["extensions"][STIX_EXT_OCTI],
        )
        patch: list[dict[str, Any]] = []
        reverse: list[dict[str, Any]] = []
        messages: list[str] = []
        for key in sorted(k for k in _RECORD_KEYS if before.get(k) != after.get(k)):
            if key in ("updated_at", "modified"):
                continue
            path, label = _PATCH_PATHS.get(key, (f"/{key}", key))
            segment = path.rsplit("/", 1)[1]
            source_old = old_ext if path.startswith("/extensions/") else old_stix
            source_new = new_ext if path.startswith("/extensions/") else new_stix
            old, new = source_old.get(segment), source_new.get(segment)
            patch.append(_patch_op(path, old, new))
            reverse.append(_patch_op(path, new, old))
            messages.append(f"replaces `{new}` in `{label}`")
        return patch, reverse, " - ".join(messages) or "updates nothing"

    def _emit(
        self,
        key: tuple[int, int],
        kind: str,
        before: Record | None,
        after: Record | None,
        *,
        message: str,
        context: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
        stix_text: str | None = None,
    ) -> None:
        """Log one change for the stream (visibility-translated); call with the lock held."""
        self._head = key
        was, now = self._visible(before), self._visible(after)
        if kind == "create":
            event = "create" if now else None
        elif kind == "delete":
            event = "delete" if was else None
        else:
            event = {(True, True): "update", (False, True): "create", (True, False): "delete"}.get(
                (was, now)
            )
        if event is None:
            return
        if stix_text is None:
            stix_text = self._stix_json(after if after is not None else before)  # type: ignore[arg-type]
        envelope: dict[str, Any] = {
            "version": "4",
            "type": kind,
            "scope": "external",
            "message": message,
            "origin": {"user_id": _CREATOR_ID, "referer": "sandbox"},
        }
        if event == "update" and context is not None:
            envelope["context"] = {"patch": context[0], "reverse_patch": context[1]}
        body = json.dumps(envelope, ensure_ascii=False)
        # Splice the pre-rendered STIX text in as "data" without re-encoding it.
        payload = body[:-1] + ', "data": ' + stix_text + "}"
        self._events.append(_Event(key, event, payload))
        self._event_keys.append(key)
        if len(self._events) > self._event_log_size:
            drop = len(self._events) - self._event_log_size
            del self._events[:drop]
            del self._event_keys[:drop]
        self._cond.notify_all()

    # --- GraphQL --------------------------------------------------------------------------------

    def _graphql(self, body: dict[str, Any], authorized: bool) -> str:
        query = body.get("query") or ""
        variables = body.get("variables") or {}
        match = _ROOT_FIELD.match(query)
        root = match.group(1) if match else "?"
        self._log_request({"field": root, "variables": variables})
        if not authorized:
            return _error_json("You must be logged in to do this.", "AUTH_REQUIRED")
        try:
            if root == "indicators":
                return self._indicators(variables, selected_fields(query, "node"))
            data = self._resolve(root, variables, query)
        except GraphQLError as exc:
            return _error_json(exc.message, exc.code)
        return json.dumps({"data": {root: data}}, ensure_ascii=False)

    def _resolve(self, root: str, variables: dict[str, Any], query: str) -> Any:
        match root:
            case "about":
                return {"version": PLATFORM_VERSION, "dependencies": []}
            case "registerConnector":
                spec = variables.get("input") or {}
                connector_id = str(spec.get("id"))
                with self._cond:
                    state = self.connector_states.get(connector_id)
                return {
                    "id": connector_id,
                    "name": spec.get("name"),
                    "connector_user_id": _CREATOR_ID,
                    "connector_state": state,
                    "jwks": None,
                    "config": {
                        "connection": {
                            "host": "127.0.0.1",
                            "vhost": "/",
                            "use_ssl": False,
                            "port": 5672,
                            "user": "guest",
                            "pass": "guest",
                        },
                        "listen": f"listen_{connector_id}",
                        "listen_routing": f"listen_routing_{connector_id}",
                        "listen_exchange": "amqp.connector.exchange",
                        "push": f"push_{connector_id}",
                        "push_routing": f"push_routing_{connector_id}",
                        "push_exchange": "amqp.worker.exchange",
                    },
                }
            case "pingConnector":
                connector_id = str(variables.get("id"))
                with self._cond:
                    self.connector_states[connector_id] = variables.get("state")
                    state = self.connector_states[connector_id]
                return {
                    "id": connector_id,
                    "connector_state": state,
                    "connector_info": variables.get("connectorInfo"),
                }
            case "deleteConnector":
                connector_id = str(variables.get("id"))
                with self._cond:
                    self.connector_states.pop(connector_id, None)
                return connector_id
            case "streamCollection":
                if variables.get("id") != self.stream_id:
                    return None
                return {
                    "id": self.stream_id,
                    "name": self.stream_name,
                    "description": "Indicators for Microsoft Defender",
                    "stream_live": self.stream_enabled,
                    "stream_public": False,
                    "filters": json.dumps(self.stream_filters) if self.stream_filters else None,
                }
            case "indicator":
                with self._cond:
                    record = self._records.get(str(variables.get("id")))
                    if record is None:
                        return None
                    return json.loads(self._node_json(record, selected_fields(query, "indicator")))
        raise GraphQLError(
            f'Cannot query field "{root}" on type "Query".', "GRAPHQL_VALIDATION_FAILED"
        )

    def _indicators(self, variables: dict[str, Any], fields: frozenset[str] | None) -> str:
        with self._cond:
            self._page_requests += 1
            failure = self._fail_pages.pop(self._page_requests, None)
            if failure is None and self._fail_after and self._page_requests > self._fail_after[0]:
                failure = self._fail_after[1]
            if failure is not None:
                raise GraphQLError(failure, "DATABASE_ERROR")
            first = variables.get("first")
            first = 500 if first is None else max(0, min(int(first), self.max_page_size))
            listing = self._listing(
                variables.get("filters"),
                variables.get("search"),
                variables.get("orderBy") or "created_at",
                (variables.get("orderMode") or "asc").lower(),
            )
            start = self._cursor_start(listing, variables.get("after"), variables.get("orderMode"))
            page = listing.ids[start : start + first]
            edges = []
            for position, indicator_id in enumerate(page, start):
                cursor = _encode_cursor(listing.sort_keys[position])
                node = self._node_json(self._records[indicator_id], fields)
                edges.append(f'{{"cursor": "{cursor}", "node": {node}}}')
            info = {
                "startCursor": _encode_cursor(listing.sort_keys[start]) if page else "",
                "endCursor": _encode_cursor(listing.sort_keys[start + len(page) - 1])
                if page
                else "",
                "hasNextPage": start + len(page) < len(listing.ids),
                "hasPreviousPage": start > 0,
                "globalCount": len(listing.ids),
            }
        return (
            '{"data": {"indicators": {"edges": ['
            + ", ".join(edges)
            + '], "pageInfo": '
            + json.dumps(info)
            + "}}}"
        )

    def _listing(self, filters: Any, search: Any, order_by: str, order_mode: str) -> _Listing:
        if order_by not in _ORDERINGS:
            raise GraphQLError(
                f'Value "{order_by}" does not exist in "IndicatorsOrdering" enum.',
                "GRAPHQL_VALIDATION_FAILED",
            )
        if order_mode not in ("asc", "desc"):
            raise GraphQLError(f'Value "{order_mode}" does not exist in "OrderingMode" enum.')
        if isinstance(filters, str):  # tolerated: a JSON string
            filters = json.loads(filters) if filters else None
        needle = str(search).lower() if search else ""
        cache_key = (json.dumps(filters, sort_keys=True), needle, order_by, order_mode)
        cached = self._listing_cache.get(cache_key)
        if cached is not None:
            return cached
        _validate_group(filters)
        field_name = _ORDERINGS[order_by]
        keyed = [
            (_sort_value(r.get(field_name)), r["id"])
            for r in self._records.values()
            if group_matches(r, filters)
            and (not needle or needle in f"{r['name']} {r['pattern']}".lower())
        ]
        keyed.sort(reverse=order_mode == "desc")
        ids = [k[1] for k in keyed]
        listing = _Listing(ids, {i: n for n, i in enumerate(ids)}, keyed)
        self._listing_cache[cache_key] = listing
        return listing

    @staticmethod
    def _cursor_start(listing: _Listing, after: Any, order_mode: Any) -> int:
        if not after:
            return 0
        try:
            raw = json.loads(base64.urlsafe_b64decode(str(after).encode()).decode())
            key = (tuple(raw[0]), raw[1])
        except (ValueError, TypeError, IndexError) as exc:
            raise GraphQLError("Invalid cursor", "UNSUPPORTED_ERROR") from exc
        position = listing.index.get(key[1])
        if position is not None:
            return position + 1
        # The cursor's row is gone (deleted or changed): continue after its sort position.
        if (order_mode or "asc").lower() == "desc":
            return next((n for n, k in enumerate(listing.sort_keys) if k < key), len(listing.ids))
        return bisect.bisect_right(listing.sort_keys, key)

    # --- stream ---------------------------------------------------------------------------------

    def _stream_check(self, stream_id: str, authorized: bool) -> int:
        if not authorized or stream_id != self.stream_id:
            return 401
        if not self.stream_enabled:
            return 410
        return 200

    def _recovery(
        self, recover_ms: int, position: tuple[int, int]
    ) -> tuple[list[str], tuple[int, int]]:
        """Current matching records updated in (position, recover] as ``create`` messages.

        Ids are ``<updated_at ms>-<n>`` in (updated_at, id) order, numbered over the whole
        recoverable set, so a client cut off mid-recovery resumes exactly where it stopped.
        """
        with self._cond:
            chosen = []
            for record in self._records.values():
                updated = _ms(record["updated_at"])
                if position[0] <= updated <= recover_ms and self._visible(record):
                    chosen.append((updated, record["id"], record))
            chosen.sort(key=lambda c: (c[0], c[1]))
            messages: list[str] = []
            last_ms, seq = -1, 0
            for updated, _, record in chosen:
                seq = seq + 1 if updated == last_ms else 0
                last_ms = updated
                if (updated, seq) <= position:
                    continue
                envelope = json.dumps(
                    {
                        "version": "4",
                        "message": f"creates a Indicator `{record['name']}`",
                        "origin": {"referer": "init"},
                    },
                    ensure_ascii=False,
                )
                payload = envelope[:-1] + ', "data": ' + self._stix_json(record) + "}"
                messages.append(_sse(f"{updated}-{seq}", "create", payload))
            # Tail from the recover point: logged events at or before it are in the listing.
            # Future ids must land after it, whatever the wall clock says.
            at_point = [k for k in self._event_keys if k[0] == recover_ms]
            tail_from = max(at_point) if at_point else (recover_ms, 0)
            if self._head < tail_from:
                self._head = tail_from
            return messages, tail_from

    def _serve_stream(self, handler: _Handler, conn: _Connection, query: dict[str, str]) -> None:
        headers = conn.headers
        position = _parse_event_id(
            headers.get("last-event-id") or query.get("from") or headers.get("from")
        )
        recover_text = query.get("recover") or headers.get("recover") or headers.get("recover-date")
        listen_delete = (
            query.get("listen-delete") or headers.get("listen-delete") or "true"
        ) != "false"
        with self._cond:
            head = self._head
            connected = {
                "lastEventId": f"{head[0]}-{head[1]}",
                "firstEventId": self._events[0].id if self._events else "0-0",
                "streamSize": len(self._events),
                "connectionId": str(uuid.uuid4()),
            }
        if position is None:
            position = head  # no position: live only, from now
        write = handler.wfile.write
        intro = ""
        if self.retry_ms:
            intro += f"retry: {self.retry_ms}\n"
        write((intro + _sse(None, "connected", json.dumps(connected))).encode())
        handler.wfile.flush()
        recover_ms = _parse_recover(recover_text)
        if recover_ms is not None and recover_ms > position[0]:
            messages, position = self._recovery(recover_ms, position)
            _write_batched(handler, messages)
        interval = self.heartbeat_interval
        next_beat = time.monotonic()
        while True:
            with self._cond:
                start = bisect.bisect_right(self._event_keys, position)
                pending = self._events[start:]
                if not pending and not conn.closed:
                    self._cond.wait(max(0.0, next_beat - time.monotonic()))
                    start = bisect.bisect_right(self._event_keys, position)
                    pending = self._events[start:]
                closed = conn.closed
                head = self._head
            if closed:
                return
            messages = [
                _sse(e.id, e.event, e.payload)
                for e in pending
                if listen_delete or e.event != "delete"
            ]
            if pending:
                position = max(position, pending[-1].key)
            _write_batched(handler, messages)
            if time.monotonic() >= next_beat:
                # Every logged event up to ``head`` has been sent: the position can move there.
                position = max(position, head)
                beat_id = f"{position[0]}-{position[1]}"
                date = format_date(datetime.fromtimestamp(position[0] / 1000, UTC))
                write(_sse(beat_id, "heartbeat", json.dumps(date)).encode())
                handler.wfile.flush()
                next_beat = time.monotonic() + interval


def selected_fields(query: str, parent: str) -> frozenset[str] | None:
    """Top-level field names selected under the first ``parent { … }`` of a query.

    Sub-selections are not projected (``objectLabel { id }`` returns whole labels): pycti only
    indexes what it asked for. ``None`` when the selection cannot be found (return everything).
    """
    match = re.search(r"\b" + re.escape(parent) + r"\b[^{]*\{", query)
    if match is None:
        return None
    fields: set[str] = set()
    depth, parens, i = 1, 0, match.end()
    token = re.compile(r"[A-Za-z_]\w*")
    while i < len(query) and depth > 0:
        char = query[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "(":
            parens += 1
        elif char == ")":
            parens -= 1
        elif char == "#":  # comment to end of line
            end = query.find("\n", i)
            i = len(query) if end < 0 else end
            continue
        elif depth == 1 and parens == 0 and (char.isalpha() or char == "_"):
            word = token.match(query, i)
            assert word is not None
            name = word.group(0)
            rest = query[word.end() :].lstrip()
            if not rest.startswith(":"):  # ``alias: field`` → the field follows
                fields.add(name)
            i = word.end()
            continue
        i += 1
    fields.discard("on")
    return frozenset(fields) if fields else None


def _patch_op(path: str, old: Any, new: Any) -> dict[str, Any]:
    if old is None:
        return {"op": "add", "path": path, "value": new}
    if new is None:
        return {"op": "remove", "path": path}
    return {"op": "replace", "path": path, "value": new}


def _sort_value(value: Any) -> tuple[int, Any]:
    # Nulls first, then by value; the tuple keeps mixed None/int comparable.
    return (0, "") if value is None else (1, value)


def _encode_cursor(key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps([list(key[0]), key[1]]).encode()).decode()


def _error_json(message: str, code: str) -> str:
    return json.dumps(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}
    )


def _sse(event_id: str | None, event: str, data: str) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _write_batched(handler: _Handler, messages: list[str], limit: int = 256 * 1024) -> None:
    batch: list[str] = []
    size = 0
    for text in messages:
        batch.append(text)
        size += len(text)
        if size >= limit:
            handler.wfile.write("".join(batch).encode())
            batch, size = [], 0
    if batch:
        handler.wfile.write("".join(batch).encode())
    handler.wfile.flush()


# --- HTTP -----------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], emu: OpenCTIEmulator
    ) -> None:
        self.emulator = emu
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without this every response waits ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _authorized(self) -> bool:
        value = self.headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.server.emulator.token

    def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
        data = body.encode("utf-8")
        head = (
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
            f"Content-Type: {content_type}; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode("latin-1")
        self.wfile.write(head + data)
        self.wfile.flush()

    def do_POST(self) -> None:
        emu = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path.rstrip("/") != "/graphql":
            self._send(404, json.dumps({"error": "not found"}))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, _error_json("Invalid JSON body", "BAD_USER_INPUT"))
            return
        self._send(200, emu._graphql(body, self._authorized()))

    def do_GET(self) -> None:
        emu = self.server.emulator
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        if not path.startswith("/stream"):
            self._send(404, json.dumps({"error": "not found"}))
            return
        stream_id = path[len("/stream/") :] if path.startswith("/stream/") else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        emu._log_request({"field": "stream", "path": parts.path, "headers": headers})
        status = emu._stream_check(stream_id, self._authorized())
        if status != 200:
            self._send(status, json.dumps({"status": status, "error": "stream not available"}))
            return
        self.close_connection = True  # the body ends when the connection closes
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/event-stream; charset=utf-8\r\n"
            "Cache-Control: no-cache, no-transform\r\n"
            "Connection: close\r\n"
            "X-Accel-Buffering: no\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1"))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        conn = _Connection(headers=headers, sock=self.connection)
        with emu._cond:
            emu._connections.append(conn)
        try:
            emu._serve_stream(self, conn, query)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client went away
        finally:
            with emu._cond:
                conn.closed = True
                emu._connections.remove(conn)


# --- command line ---------------------------------------------------------------------------------


def _config_snippet(emu: OpenCTIEmulator) -> Iterator[str]:
    yield "opencti:"
    yield f"  url: {emu.url}"
    yield f"  token: {emu.token}  # sandbox token, not a secret"
    yield "connector:"
    yield f"  live_stream_id: {emu.stream_id}"


def main(argv: list[str] | None = None) -> int:
    """Serve a fake OpenCTI with a generated dataset until interrupted."""
    parser = argparse.ArgumentParser(prog="reconciler sandbox opencti", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--count", type=int, default=1000, help="generated indicators")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream-id", default="stream-1")
    parser.add_argument("--token", default="opencti-token")
    args = parser.parse_args(argv)
    emu = OpenCTIEmulator(
        host=args.host, port=args.port, token=args.token, stream_id=args.stream_id, seed=args.seed
    )
    emu.load(generate_indicators(args.count, args.seed))
    emu.start()
    print(f"fake OpenCTI on {emu.url} ({args.count} indicators, stream {emu.stream_id})")
    print("\n".join(_config_snippet(emu)), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
