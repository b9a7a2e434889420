"""The live stream of the fake OpenCTI: its event log and ``GET /stream/{id}`` (SSE).

Owns stream ids (wall-clock ms, strictly increasing) and the record dates they give, events
logged on every change after visibility translation against the stream filters (an update that
makes a record visible is a ``create``, one that hides it a ``delete``), JSON patches of
updates, and serving a connection: the ``connected`` message, first-run recovery of current
records (``recover``), resume after ``Last-Event-ID``/``from``, live events, heartbeats,
``listen-delete``, closing on demand. Objects other than indicators (sightings) are logged as
they are: the stream filters apply to indicators, the others are delivered like dependencies
(the fake has no ``no-dependencies`` option) and are not part of first-run recovery.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import json
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.sandbox.dataset import format_date
from reconciler.sandbox.http import EmulatorHandler
from reconciler.sandbox.opencti.core import (
    CREATOR_ID,
    STIX_EXT_OCTI,
    GraphQLError,
    Record,
    epoch_ms,
)
from reconciler.sandbox.opencti.filters import compile_filters, group_matches
from reconciler.sandbox.opencti.population import Population, mask_and
from reconciler.sandbox.opencti.render import stix_object
from reconciler.sandbox.opencti.store import RECORD_KEYS

if TYPE_CHECKING:
    from reconciler.sandbox.opencti.emulator import OpenCTIEmulator

StreamKey = tuple[int, int]
Patch = list[dict[str, Any]]

# Record key → (STIX JSON-patch path, label used in event messages).
_PATCH_PATHS = {
    "score": (f"/extensions/{STIX_EXT_OCTI}/score", "Score"),
    "detection": (f"/extensions/{STIX_EXT_OCTI}/detection", "Detection"),
    "main_observable_type": (f"/extensions/{STIX_EXT_OCTI}/main_observable_type", "Type"),
    "observable_values": (f"/extensions/{STIX_EXT_OCTI}/observable_values", "Observables"),
    "stix_ids": (f"/extensions/{STIX_EXT_OCTI}/stix_ids", "STIX ids"),
    "labels": ("/labels", "Label"),
    "markings": ("/object_marking_refs", "Marking"),
    "created_by": ("/created_by_ref", "Author"),
    "status_id": (f"/extensions/{STIX_EXT_OCTI}/workflow_id", "Status"),
}
_SSE_HEAD = (
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/event-stream; charset=utf-8\r\n"
    "Cache-Control: no-cache, no-transform\r\n"
    "Connection: close\r\n"
    "X-Accel-Buffering: no\r\n\r\n"
)


@dataclass(frozen=True)
class Event:
    key: StreamKey
    event: str  # SSE event name after visibility translation
    payload: str  # JSON envelope

    @property
    def id(self) -> str:
        return f"{self.key[0]}-{self.key[1]}"


@dataclass
class Connection:
    closed: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    sock: socket.socket | None = None

    def close(self) -> None:
        """Mark closed and cut the socket, even in the middle of a large write."""
        self.closed = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class EventLog:
    """Logged events in id order (the oldest dropped past ``size``), the head id, connections.

    Not locked itself: callers hold the emulator's condition, notified on every new event."""

    def __init__(self, size: int) -> None:
        self.events: list[Event] = []
        self.keys: list[StreamKey] = []
        self.size = size
        self.head: StreamKey = (0, 0)
        self.connections: list[Connection] = []

    def next_key(self) -> StreamKey:
        """Next stream id: wall-clock ms, strictly after every id handed out so far."""
        now_ms = int(time.time() * 1000)
        last_ms, last_seq = self.head
        return (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)

    def append(self, event: Event) -> None:
        self.events.append(event)
        self.keys.append(event.key)
        if len(self.events) > self.size:
            drop = len(self.events) - self.size
            del self.events[:drop]
            del self.keys[:drop]

    def after(self, position: StreamKey) -> list[Event]:
        return self.events[bisect.bisect_right(self.keys, position) :]


def key_date(key: StreamKey) -> str:
    """The record date of a change logged at stream id ``key`` (its wall-clock ms)."""
    return format_date(datetime.fromtimestamp(key[0] / 1000, UTC))


def describe(event: Event) -> dict[str, Any]:
    """An event as tests read it: ``{id, event, data}`` with the data parsed."""
    return {"id": event.id, "event": event.event, "data": json.loads(event.payload)}


# --------------------------------------------------------------------------- events


def visible(emu: OpenCTIEmulator, record: Record | None) -> bool:
    """Whether the stream's filters let ``record`` through (unusable filters: nothing)."""
    try:
        return record is not None and group_matches(record, emu.stream_filters)
    except GraphQLError:
        return False


def patches(before: Record, after: Record) -> tuple[Patch, Patch, str]:
    """The JSON patch from ``before`` to ``after`` in STIX terms, its reverse, the message."""
    old_stix, new_stix = stix_object(before), stix_object(after)
    old_ext, new_ext = (
        old_stix["extensions"][STIX_EXT_OCTI],
        new_stix["extensions"][STIX_EXT_OCTI],
    )
    patch: Patch = []
    reverse: Patch = []
    messages: list[str] = []
    for key in sorted(k for k in RECORD_KEYS if before.get(k) != after.get(k)):
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


def diff(old_stix: dict[str, Any], new_stix: dict[str, Any]) -> tuple[Patch, Patch]:
    """The JSON patch between two renderings of one STIX object, and its reverse: whole values
    of top-level fields and of OpenCTI extension fields (``modified``/``updated_at`` left out,
    as in :func:`patches`)."""
    patch: Patch = []
    reverse: Patch = []
    sides = (
        ("", old_stix, new_stix, {"extensions", "modified"}),
        (
            f"/extensions/{STIX_EXT_OCTI}",
            old_stix.get("extensions", {}).get(STIX_EXT_OCTI, {}),
            new_stix.get("extensions", {}).get(STIX_EXT_OCTI, {}),
            {"updated_at"},
        ),
    )
    for prefix, old, new, skip in sides:
        for name in sorted((old.keys() | new.keys()) - skip):
            if old.get(name) != new.get(name):
                patch.append(_patch_op(f"{prefix}/{name}", old.get(name), new.get(name)))
                reverse.append(_patch_op(f"{prefix}/{name}", new.get(name), old.get(name)))
    return patch, reverse


def _patch_op(path: str, old: Any, new: Any) -> dict[str, Any]:
    if old is None:
        return {"op": "add", "path": path, "value": new}
    if new is None:
        return {"op": "remove", "path": path}
    return {"op": "replace", "path": path, "value": new}


def emit(
    emu: OpenCTIEmulator,
    key: StreamKey,
    kind: str,
    before: Record | None,
    after: Record | None,
    *,
    message: str,
    context: tuple[Patch, Patch] | None = None,
    stix_text: str | None = None,
) -> None:
    """Log one change for the stream (visibility-translated); call with the lock held."""
    log = emu._stream
    log.head = key
    was, now = visible(emu, before), visible(emu, after)
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
        shown = after if after is not None else before
        assert shown is not None
        stix_text = emu._store.stix_json(shown)
    _log(emu, key, event, kind, stix_text, message, context)


def emit_object(
    emu: OpenCTIEmulator,
    key: StreamKey,
    kind: str,
    stix: dict[str, Any],
    *,
    message: str,
    context: tuple[Patch, Patch] | None = None,
) -> None:
    """Log one change of an object other than an indicator (no visibility translation: the
    stream filters are about indicators); call with the lock held."""
    emu._stream.head = key
    _log(emu, key, kind, kind, json.dumps(stix, ensure_ascii=False), message, context)


def _log(
    emu: OpenCTIEmulator,
    key: StreamKey,
    event: str,
    kind: str,
    stix_text: str,
    message: str,
    context: tuple[Patch, Patch] | None,
) -> None:
    envelope: dict[str, Any] = {
        "version": "4",
        "type": kind,
        "scope": "external",
        "message": message,
        "origin": {"user_id": CREATOR_ID, "referer": "sandbox"},
    }
    if event == "update" and context is not None:
        envelope["context"] = {"patch": context[0], "reverse_patch": context[1]}
    emu._stream.append(Event(key, event, _splice(envelope, stix_text)))
    emu._cond.notify_all()


def _splice(envelope: dict[str, Any], stix_text: str) -> str:
    """The envelope with the pre-rendered STIX text as ``data``, without re-encoding it."""
    body = json.dumps(envelope, ensure_ascii=False)
    return body[:-1] + ', "data": ' + stix_text + "}"


# --------------------------------------------------------------------------- serving


def status(emu: OpenCTIEmulator, stream_id: str, authorized: bool) -> int:
    """200, or 401 (bad token or unknown stream), 403 (a non-public stream and a user without
    "Access data sharing"), or 410 (the stream is turned off)."""
    if not authorized or stream_id != emu.stream_id:
        return 401
    allowed = {"BYPASS", "TAXIIAPI"} & set(emu.capabilities)
    if not emu.stream_public and not allowed:
        return 403
    if not emu.stream_enabled:
        return 410
    return 200


def serve(
    emu: OpenCTIEmulator, handler: EmulatorHandler, headers: dict[str, str], query: dict[str, str]
) -> None:
    """Answer an accepted stream request until the client leaves or the stream is cut."""
    handler.close_connection = True  # the body ends when the connection closes
    handler.wfile.write(_SSE_HEAD.encode("latin-1"))
    conn = Connection(headers=headers, sock=handler.connection)
    with emu._cond:
        emu._stream.connections.append(conn)
    try:
        _serve_connection(emu, handler, conn, query)
    except (BrokenPipeError, ConnectionResetError, OSError):
        pass  # the client went away
    finally:
        with emu._cond:
            conn.closed = True
            emu._stream.connections.remove(conn)


def _serve_connection(
    emu: OpenCTIEmulator, handler: EmulatorHandler, conn: Connection, query: dict[str, str]
) -> None:
    headers = conn.headers
    position = _parse_event_id(
        headers.get("last-event-id") or query.get("from") or headers.get("from")
    )
    recover_text = query.get("recover") or headers.get("recover") or headers.get("recover-date")
    listen_delete = (
        query.get("listen-delete") or headers.get("listen-delete") or "true"
    ) != "false"
    head = _send_connected(emu, handler)
    if position is None:
        position = head  # no position: live only, from now
    recover_ms = _parse_recover(recover_text)
    if recover_ms is not None and recover_ms > position[0]:
        messages, position = _recovery(emu, recover_ms, position)
        _write_batched(handler, messages)
    _follow(emu, handler, conn, position, listen_delete)


def _send_connected(emu: OpenCTIEmulator, handler: EmulatorHandler) -> StreamKey:
    """Write ``retry`` and the ``connected`` message; return the head id it announced."""
    with emu._cond:
        log = emu._stream
        head = log.head
        connected = {
            "lastEventId": f"{head[0]}-{head[1]}",
            "firstEventId": log.events[0].id if log.events else "0-0",
            "streamSize": len(log.events),
            "connectionId": str(uuid.uuid4()),
        }
    intro = f"retry: {emu.retry_ms}\n" if emu.retry_ms else ""
    handler.wfile.write((intro + _sse(None, "connected", json.dumps(connected))).encode())
    handler.wfile.flush()
    return head


def _recovery(
    emu: OpenCTIEmulator, recover_ms: int, position: StreamKey
) -> tuple[Iterator[str], StreamKey]:
    """Current matching records updated in (position, recover] as ``create`` messages.

    Ids are ``<updated_at ms>-<n>`` in (updated_at, id) order, numbered over the whole
    recoverable set, so a client cut off mid-recovery resumes exactly where it stopped. The
    messages are made while they are written (a generated population can hold millions): the
    explicit records are rendered under the lock, the generated ones from a snapshot of which
    of them the filters let through.
    """
    with emu._cond:
        store = emu._store
        explicit: list[tuple[int, str, str | int, str]] = []
        for record in store.records.values():
            updated = epoch_ms(record["updated_at"])
            if position[0] <= updated <= recover_ms and visible(emu, record):
                explicit.append((updated, record["id"], store.stix_json(record), record["name"]))
        explicit.sort(key=lambda c: (c[0], c[1]))
        generated: Iterator[tuple[int, str, str | int, str]] = iter(())
        pop = store.population
        if pop is not None and pop.n:
            try:
                selected = pop.mask(compile_filters(emu.stream_filters))
            except GraphQLError:
                selected = bytes(pop.n)
            ranked = pop.to_rank_order(mask_and(selected, store.visible_generated()))
            lo = pop.first_rank("updated", position[0], strictly_after=False)
            hi = pop.first_rank("updated", recover_ms, strictly_after=True)
            generated = _generated_rows(pop, ranked, lo, hi)
        # Tail from the recover point: logged events at or before it are in the listing.
        # Future ids must land after it, whatever the wall clock says.
        log = emu._stream
        at_point = [k for k in log.keys if k[0] == recover_ms]
        tail_from = max(at_point) if at_point else (recover_ms, 0)
        if log.head < tail_from:
            log.head = tail_from
    rows = heapq.merge(explicit, generated, key=lambda c: (c[0], c[1]))
    return _recovery_messages(rows, pop, position), tail_from


def _generated_rows(
    pop: Population, ranked: bytes, lo: int, hi: int
) -> Iterator[tuple[int, str, str | int, str]]:
    rank = ranked.find(1, lo, hi)
    while rank >= 0:
        i = pop.index_at_rank(rank)
        yield pop.time_ms("updated", i), pop.internal_id(i), i, ""
        rank = ranked.find(1, rank + 1, hi)


def _recovery_messages(
    rows: Iterator[tuple[int, str, str | int, str]], pop: Population | None, position: StreamKey
) -> Iterator[str]:
    last_ms, seq = -1, 0
    for updated, _, source, name in rows:
        seq = seq + 1 if updated == last_ms else 0
        last_ms = updated
        if (updated, seq) <= position:
            continue
        if isinstance(source, int):
            assert pop is not None
            record = pop.record(source)
            source, name = json.dumps(stix_object(record), ensure_ascii=False), record["name"]
        envelope = {
            "version": "4",
            "message": f"creates a Indicator `{name}`",
            "origin": {"referer": "init"},
        }
        yield _sse(f"{updated}-{seq}", "create", _splice(envelope, source))


def _follow(
    emu: OpenCTIEmulator,
    handler: EmulatorHandler,
    conn: Connection,
    position: StreamKey,
    listen_delete: bool,
) -> None:
    """Live events after ``position`` and heartbeats, until the connection is closed."""
    interval = emu.heartbeat_interval
    next_beat = time.monotonic()
    while True:
        with emu._cond:
            log = emu._stream
            pending = log.after(position)
            if not pending and not conn.closed:
                emu._cond.wait(max(0.0, next_beat - time.monotonic()))
                pending = log.after(position)
            closed = conn.closed
            head = log.head
        if closed:
            return
        messages = [
            _sse(e.id, e.event, e.payload) for e in pending if listen_delete or e.event != "delete"
        ]
        if pending:
            position = max(position, pending[-1].key)
        _write_batched(handler, messages)
        if time.monotonic() >= next_beat:
            # Every logged event up to ``head`` has been sent: the position can move there.
            position = max(position, head)
            beat_id = f"{position[0]}-{position[1]}"
            date = format_date(datetime.fromtimestamp(position[0] / 1000, UTC))
            handler.wfile.write(_sse(beat_id, "heartbeat", json.dumps(date)).encode())
            handler.wfile.flush()
            next_beat = time.monotonic() + interval


# --------------------------------------------------------------------------- helpers


def _parse_recover(text: str | None) -> int | None:
    """Epoch ms of a ``recover`` date; unreadable dates are ignored (live only)."""
    if not text:
        return None
    try:
        return epoch_ms(text)
    except ValueError:
        return None


def _parse_event_id(text: str | None) -> StreamKey | None:
    if not text:
        return None
    head, _, tail = text.strip().partition("-")
    try:
        return int(head), int(tail or 0)
    except ValueError:
        return None


def _sse(event_id: str | None, event: str, data: str) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _write_batched(
    handler: EmulatorHandler, messages: Iterable[str], limit: int = 256 * 1024
) -> None:
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
