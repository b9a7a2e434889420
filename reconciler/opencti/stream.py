"""The OpenCTI live-stream consumer: reads ``/stream/{id}`` and hands indicator events over in
micro-batches, keeping the stream position so a restart resumes where it stopped.

Owns: the SSE protocol (parsing, reconnection, heartbeat watchdog, position bookkeeping) and
the micro-batching of indicator events. Must not: decide what an event means for Defender
(the controller does a scoped reconcile per batch), raise into its caller's thread, stop the
process, or log the token.

Why not pycti's ``OpenCTIConnectorHelper.listen_stream``: it kills its own process (SIGTERM
through ``sys.excepthook``) when the callback raises, when a reconnect fails (stream server
down, 401, 410), when it is stopped, and when its 45 s heartbeat watchdog fires (reference
``opencti-pycti.md`` §2.5/§2.6). That contradicts "the controller stays up and catches up when
the stream server is killed and restarted" and "SIGTERM exits 0". So we speak the same small SSE
protocol ourselves with httpx, the way pycti does on the wire: ``GET {url}/stream/{stream_id}``
with ``authorization: Bearer``, ``Last-Event-ID`` (``0-0`` on a first run, plus
``?recover=<now ISO>`` so the server replays the current set as creates, harmless),
``listen-delete``, ``no-dependencies``, ``with-inferences: false``, ``Accept:
text/event-stream``. pycti's API client is used only to keep the position in OpenCTI's
connector state (``state.OpenCTIConnectorStore``); any ``PositionStore`` works.

Behaviour, in the order a message travels:

- Messages without an ``id`` are ignored, like pycti (``connected`` is only logged). A
  ``retry:`` line sets the minimum reconnect delay.
- ``heartbeat`` and every other id-bearing message advance the read position.
- ``create``/``update``/``delete``/``merge`` (dispatch on the SSE event name, never on the
  envelope ``type``) are JSON-decoded; malformed JSON is logged, reported as
  ``on_status("error", {"kind": "malformed", ...})`` and skipped; non-indicator objects are
  skipped. Both still advance the position.
- Indicator events are buffered and handed to ``on_events`` from a dedicated worker thread once
  ``batch_window`` seconds passed since the oldest buffered event, or ``batch_max`` are buffered.
  The reader keeps reading (heartbeats included) while ``on_events`` runs, so a slow handler
  never makes the server drop us; past ``10 * batch_max`` buffered events the reader waits.
- The position saved to the store is the newest one up to which every indicator event has been
  handed over and returned (at-least-once; a replay is harmless because the reconcile is
  idempotent). It is saved after each batch and, for heartbeats alone, at most once a second.
- ``on_events`` raising: logged and reported, the same batch is retried ``handler_attempts``
  times in all with a doubling delay; then it is dropped with an error log and the position
  moves past it: the scheduled full reconcile heals whatever it would have changed.
- Connection error, EOF, non-2xx (401 = bad token or unknown stream, logged as such), or no
  id-bearing message for ``heartbeat_timeout`` seconds: reconnect after a capped exponential
  backoff with jitter (never below the server's ``retry``), resuming with ``Last-Event-ID`` =
  the newest position read (buffered events survive reconnects in memory). It never gives up;
  the scheduled reconcile keeps running meanwhile.
- ``stop()`` wakes every wait, shuts the socket down, abandons buffered events that were not
  handed over yet (they are replayed after a restart), lets a running ``on_events`` finish
  within the timeout, saves and flushes the position.

Threads are daemons so a hung handler can never hold the process past shutdown; ``stop()`` joins
them within its timeout. Waits use an ``Event`` (so ``stop()`` interrupts them at once) when the
clock is the system clock; a test clock's ``sleep`` is used as-is. Batching and the heartbeat
watchdog run on real monotonic time because they measure real I/O.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from loguru import logger

from reconciler.clock import Clock, SystemClock
from reconciler.errors import excerpt
from reconciler.opencti.state import PositionStore

__all__ = [
    "DATA_EVENTS",
    "STIX_EXT_OCTI",
    "SSEMessage",
    "SSEParser",
    "StreamConsumer",
    "StreamEvent",
]

#: OpenCTI's STIX property extension (holds the internal id, score, detection ...).
STIX_EXT_OCTI = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"

#: SSE event names that carry an object.
DATA_EVENTS = frozenset({"create", "update", "delete", "merge"})

#: Position sent on a first run, with ``?recover=``, as pycti does.
FIRST_POSITION = "0-0"

StatusCallback = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class StreamEvent:
    """One object event from the live stream, as handed to ``on_events``."""

    id: str
    """SSE id (the stream position, ``<epoch-ms>-<seq>``)."""
    event: str
    """SSE event name: create, update, delete or merge. Dispatch on this, not envelope type."""
    data: dict[str, Any]
    """The complete STIX object (for delete: its last state)."""
    envelope: dict[str, Any]
    """The whole parsed envelope (``context.patch``/``reverse_patch``, ``origin`` ...)."""

    @property
    def opencti_id(self) -> str | None:
        """OpenCTI internal id from the property extension, or None when absent."""
        extensions = self.data.get("extensions")
        if isinstance(extensions, dict):
            octi = extensions.get(STIX_EXT_OCTI)
            if isinstance(octi, dict):
                value = octi.get("id")
                if isinstance(value, str) and value:
                    return value
        return None

    @property
    def is_indicator(self) -> bool:
        """True for STIX indicators, the only objects the reconciler acts on."""
        return self.data.get("type") == "indicator"


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched SSE message (fields as received; ``id`` None when the message had none)."""

    id: str | None
    event: str
    data: str
    retry: int | None


class SSEParser:
    """Incremental ``text/event-stream`` parser: feed it lines, get messages on blank lines.

    Unlike browsers, an id does not carry over to later messages: OpenCTI gives every message
    that matters its own id, and pycti treats a message without one as having none.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._id: str | None = None
        self._event: str | None = None
        self._data: list[str] = []
        self._retry: int | None = None

    def feed(self, line: str) -> SSEMessage | None:
        """Take one line (without its line ending); return a message when one is complete."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        if self._id is None and self._event is None and not self._data and self._retry is None:
            return None
        message = SSEMessage(
            id=self._id,
            event=self._event or "message",
            data="\n".join(self._data),
            retry=self._retry,
        )
        self._reset()
        return message

    def parse(self, lines: Iterable[str]) -> list[SSEMessage]:
        """Parse a whole sequence of lines (handy in tests)."""
        out = []
        for line in lines:
            message = self.feed(line)
            if message is not None:
                out.append(message)
        return out


@dataclass
class _Buffered:
    event: StreamEvent
    floor: str | None  # position read just before this event: safe to persist until delivered
    added: float  # time.monotonic() when buffered


class _Stopped(Exception):
    """Internal: the consumer is stopping."""


def id_millis(position: str | None) -> int | None:
    """Epoch milliseconds of a stream id ``<ms>-<seq>``, None when it has another shape."""
    if not position:
        return None
    head = position.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _iso_millis(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class StreamConsumer:
    """Consumes an OpenCTI live stream in background threads until ``stop()``.

    ``on_events`` receives lists of indicator ``StreamEvent`` in stream order, from the worker
    thread; it should be idempotent (events can repeat after a restart). ``on_status(kind,
    info)`` feeds metrics, is called from either thread, must be quick, and can never break the
    consumer. Kinds and their ``info``:

    - ``connected`` ``{position}`` (the ``Last-Event-ID`` sent); ``disconnected`` ``{position}``;
    - ``event`` ``{id, event, type, indicator, lag}`` for every object event (lag in seconds =
      now - the id's timestamp); ``heartbeat`` ``{id, lag}``;
    - ``error`` ``{kind, ...}`` with kind ``connection`` (+ ``error`` class name), ``http``
      (+ ``status``), ``heartbeat_timeout``, ``malformed`` (+ ``id``, ``event``), ``handler``
      (+ ``attempt``, ``error``), ``state`` (store failed), ``internal``.
    """

    def __init__(
        self,
        url: str,
        token: str,
        stream_id: str,
        *,
        on_events: Callable[[list[StreamEvent]], None],
        state: PositionStore,
        listen_delete: bool = True,
        no_dependencies: bool = True,
        ssl_verify: bool | str = False,
        clock: Clock | None = None,
        backoff_cap: float = 60.0,
        heartbeat_timeout: float = 45.0,
        batch_window: float = 1.0,
        batch_max: int = 500,
        on_status: StatusCallback | None = None,
        backoff_base: float = 1.0,
        handler_attempts: int = 3,
        handler_retry_delay: float = 1.0,
        connect_timeout: float = 10.0,
        save_interval: float = 1.0,
    ) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self.stream_url = f"{url.rstrip('/')}/stream/{stream_id}"
        self._token = token
        self._on_events = on_events
        self._on_status = on_status
        self._store = state
        self._listen_delete = listen_delete
        self._no_dependencies = no_dependencies
        self._ssl_verify = ssl_verify
        self._clock: Clock = clock or SystemClock()
        self._interruptible = isinstance(self._clock, SystemClock)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.heartbeat_timeout = heartbeat_timeout
        self.batch_window = batch_window
        self.batch_max = batch_max
        self.max_buffer = 10 * batch_max
        self.handler_attempts = max(1, handler_attempts)
        self.handler_retry_delay = handler_retry_delay
        self.connect_timeout = connect_timeout
        self.save_interval = save_interval

        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._pending: deque[_Buffered] = deque()
        self._inflight = False
        self._inflight_floor: str | None = None
        self._read_pos: str | None = None
        self._saved_pos: str | None = None
        self._loaded = threading.Event()
        self._recover_until: str | None = None
        self._recover_ms: int | None = None
        self._retry_floor = 0.0
        self._connected = False
        self._response: httpx.Response | None = None
        self._response_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self.last_event_at: datetime | None = None
        """Wall time of the last object event received (any type)."""
        self.last_message_at: datetime | None = None
        """Wall time of the last id-bearing message (heartbeats included)."""

    # -- public surface -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a stream response is open."""
        return self._connected

    @property
    def position(self) -> str | None:
        """Newest position up to which every indicator event was handled (what gets saved)."""
        with self._cond:
            return self._safe_position()

    @property
    def saved_position(self) -> str | None:
        """Last position written to the store (or loaded from it)."""
        return self._saved_pos

    def start(self) -> None:
        """Start the reader and worker threads; returns at once."""
        if self._reader is not None:
            raise RuntimeError("StreamConsumer already started")
        self._reader = threading.Thread(
            target=self._run_reader, name="opencti-stream-reader", daemon=True
        )
        self._worker = threading.Thread(
            target=self._run_worker, name="opencti-stream-worker", daemon=True
        )
        self._reader.start()
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking events, let a running batch finish, save the position; bounded."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._abort_response()
        for thread in (self._reader, self._worker):
            # stop() may be called from on_events itself (the worker): never join oneself.
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [
            t.name
            for t in (self._reader, self._worker)
            if t is not None and t.is_alive() and t is not threading.current_thread()
        ]
        if alive:
            logger.warning("stream consumer: {} still busy after {} s", ", ".join(alive), timeout)
        else:
            logger.info("stream consumer stopped at position {}", self._saved_pos or "none")

    # -- reader ---------------------------------------------------------------------------

    def _run_reader(self) -> None:
        try:
            self._load_position()
        finally:
            self._loaded.set()
        verify: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=self._ssl_verify)
            if isinstance(self._ssl_verify, str)
            else self._ssl_verify
        )
        timeout = httpx.Timeout(
            connect=self.connect_timeout,
            read=self.heartbeat_timeout,
            write=self.connect_timeout,
            pool=self.connect_timeout,
        )
        attempt = 0
        with httpx.Client(verify=verify, timeout=timeout) as client:
            while not self._stop.is_set():
                healthy = False
                try:
                    healthy = self._read_once(client)
                except _Stopped:
                    break
                except Exception as exc:  # the reader thread must never die
                    if self._stop.is_set():
                        break
                    logger.error(
                        "stream reader failed unexpectedly: {}: {}",
                        type(exc).__name__,
                        self._scrub(str(exc)),
                    )
                    self._status("error", {"kind": "internal", "error": type(exc).__name__})
                if self._stop.is_set():
                    break
                attempt = 0 if healthy else attempt + 1
                delay = self._backoff(attempt)
                logger.info("stream: reconnecting in {:.2f} s", delay)
                self._wait(delay)

    def _load_position(self) -> None:
        position: str | None = None
        for attempt in range(3):
            if self._stop.is_set():
                return
            try:
                position = self._store.load()
                break
            except Exception as exc:
                logger.error(
                    "stream: cannot load the stored position ({}): {}",
                    type(exc).__name__,
                    self._scrub(str(exc)),
                )
                self._status("error", {"kind": "state", "error": type(exc).__name__})
                if attempt < 2:
                    self._wait(self._backoff(attempt + 1))
        with self._cond:
            self._read_pos = position
            self._saved_pos = position
        if position is None:
            # First run: ask the server to replay the current set, like pycti does.
            now = self._clock.now()
            self._recover_until = _iso_millis(now)
            self._recover_ms = int(now.timestamp() * 1000)
            logger.info("stream: no stored position, recovering up to {}", self._recover_until)
        else:
            logger.info("stream: resuming after position {}", position)

    def _request_params(self) -> tuple[dict[str, str], dict[str, str]]:
        with self._cond:
            position = self._read_pos
        if self._recover_until is not None:
            millis = id_millis(position)
            if millis is not None and self._recover_ms is not None and millis >= self._recover_ms:
                self._recover_until = None  # caught up: no more replays
        headers = {
            "authorization": f"Bearer {self._token}",
            "Last-Event-ID": position or FIRST_POSITION,
            "listen-delete": "true" if self._listen_delete else "false",
            "no-dependencies": "true" if self._no_dependencies else "false",
            "with-inferences": "false",
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        params = {"recover": self._recover_until} if self._recover_until else {}
        return headers, params

    def _read_once(self, client: httpx.Client) -> bool:
        """One connection; True when it delivered at least one id-bearing message."""
        headers, params = self._request_params()
        healthy = False
        try:
            with client.stream("GET", self.stream_url, headers=headers, params=params) as resp:
                with self._response_lock:
                    self._response = resp
                if self._stop.is_set():
                    raise _Stopped
                if resp.status_code != 200:
                    self._report_refusal(resp)
                    return False
                self._connected = True
                logger.info(
                    "stream: connected to {} after {}", self.stream_url, headers["Last-Event-ID"]
                )
                self._status("connected", {"position": headers["Last-Event-ID"]})
                healthy = self._consume(resp)
                if not self._stop.is_set():
                    logger.warning("stream: closed by the server, will reconnect")
        except httpx.HTTPError as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            logger.warning(
                "stream: connection failed: {}: {}", type(exc).__name__, self._scrub(str(exc))
            )
            self._status("error", {"kind": "connection", "error": type(exc).__name__})
        finally:
            with self._response_lock:
                self._response = None
            if self._connected:
                self._connected = False
                self._status("disconnected", {"position": self._read_pos})
        if self._stop.is_set():
            raise _Stopped
        return healthy

    def _report_refusal(self, resp: httpx.Response) -> None:
        try:
            body = excerpt(resp.read().decode("utf-8", "replace"))
        except httpx.HTTPError:
            body = ""
        if resp.status_code == 401:
            logger.error(
                "stream: refused with 401: the token is wrong or the stream {} is unknown; "
                "retrying (the scheduled reconcile keeps running)",
                self.stream_url,
            )
        elif resp.status_code == 410:
            logger.error("stream: {} is not live (410); retrying", self.stream_url)
        else:
            logger.error(
                "stream: {} answered {}: {}", self.stream_url, resp.status_code, self._scrub(body)
            )
        self._status("error", {"kind": "http", "status": resp.status_code})

    def _consume(self, resp: httpx.Response) -> bool:
        parser = SSEParser()
        healthy = False
        last_id_at = time.monotonic()
        for line in resp.iter_lines():
            if self._stop.is_set():
                raise _Stopped
            message = parser.feed(line)
            now = time.monotonic()
            if message is not None:
                if message.retry is not None:
                    self._retry_floor = message.retry / 1000.0
                if message.id is not None:
                    healthy = True
                    last_id_at = now
                self._handle(message)
            if now - last_id_at > self.heartbeat_timeout:
                # Bytes arrive but no heartbeat: treat the stream as dead, like pycti's watchdog.
                logger.warning("stream: no heartbeat for {:.0f} s, reconnecting", now - last_id_at)
                self._status("error", {"kind": "heartbeat_timeout"})
                break
        return healthy

    def _handle(self, message: SSEMessage) -> None:
        if message.id is None:
            if message.event == "connected":
                logger.debug("stream: server says connected: {}", excerpt(message.data))
            return  # like pycti: a message without an id carries no position
        self.last_message_at = self._clock.now()
        if message.event in DATA_EVENTS:
            self._handle_data(message.id, message.event, message.data)
            return
        if message.event == "heartbeat":
            self._status("heartbeat", {"id": message.id, "lag": self._lag(message.id)})
        elif message.event == "no-recover":
            logger.warning("stream: server cannot recover: {}", excerpt(message.data))
        self._advance(message.id)

    def _handle_data(self, position: str, name: str, raw: str) -> None:
        try:
            envelope = json.loads(raw)
            data = envelope.get("data") if isinstance(envelope, dict) else None
            if not isinstance(data, dict):
                raise ValueError("no object in the event envelope")
        except ValueError as exc:
            logger.error(
                "stream: skipping malformed {} event {}: {}", name, position, excerpt(str(exc))
            )
            self._status("error", {"kind": "malformed", "id": position, "event": name})
            self._advance(position)
            return
        event = StreamEvent(id=position, event=name, data=data, envelope=envelope)
        self.last_event_at = self._clock.now()
        self._status(
            "event",
            {
                "id": position,
                "event": name,
                "type": data.get("type"),
                "indicator": event.is_indicator,
                "lag": self._lag(position),
            },
        )
        if event.is_indicator:
            self._enqueue(event)
        else:
            self._advance(position)

    def _enqueue(self, event: StreamEvent) -> None:
        with self._cond:
            while len(self._pending) >= self.max_buffer and not self._stop.is_set():
                self._cond.wait(0.5)  # back-pressure: let the worker catch up
            if self._stop.is_set():
                raise _Stopped
            self._pending.append(_Buffered(event, self._read_pos, time.monotonic()))
            self._read_pos = event.id
            self._cond.notify_all()

    def _advance(self, position: str) -> None:
        with self._cond:
            self._read_pos = position
            self._cond.notify_all()

    def _abort_response(self) -> None:
        """Wake a blocked read at once: shutting the socket down interrupts ``recv``."""
        with self._response_lock:
            resp = self._response
        if resp is None:
            return
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- worker ---------------------------------------------------------------------------

    def _safe_position(self) -> str | None:
        if self._inflight:
            return self._inflight_floor
        if self._pending:
            return self._pending[0].floor
        return self._read_pos

    def _next_batch(self, last_save: float) -> list[StreamEvent] | None:
        """Wait until a batch is due (returned) or a save is due or stopping (None)."""
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout: float | None = None
                if self._pending:
                    due = self._pending[0].added + self.batch_window
                    if len(self._pending) >= self.batch_max or now >= due:
                        count = min(self.batch_max, len(self._pending))
                        taken = [self._pending.popleft() for _ in range(count)]
                        self._inflight = True
                        self._inflight_floor = taken[0].floor
                        self._cond.notify_all()  # the reader may wait on a full buffer
                        return [item.event for item in taken]
                    timeout = due - now
                safe = self._safe_position()
                if safe is not None and safe != self._saved_pos and self._loaded.is_set():
                    save_due = last_save + self.save_interval
                    if now >= save_due:
                        return None
                    timeout = save_due - now if timeout is None else min(timeout, save_due - now)
                self._cond.wait(timeout)
        return None

    def _run_worker(self) -> None:
        last_save = float("-inf")
        while not self._stop.is_set():
            try:
                batch = self._next_batch(last_save)
                if batch is not None:
                    self._deliver(batch)
                if self._stop.is_set():
                    break
                self._persist()
                last_save = time.monotonic()
            except Exception as exc:  # the worker thread must never die
                logger.error(
                    "stream worker failed: {}: {}", type(exc).__name__, self._scrub(str(exc))
                )
                self._status("error", {"kind": "internal", "error": type(exc).__name__})
                self._wait(1.0)
        # Let the reader finish its last message so the final save is as new as possible.
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(1.0)
        self._persist(final=True)

    def _deliver(self, batch: list[StreamEvent]) -> None:
        delay = self.handler_retry_delay
        delivered = dropped = False
        for attempt in range(1, self.handler_attempts + 1):
            try:
                self._on_events(list(batch))
                delivered = True
                break
            except Exception as exc:
                logger.error(
                    "stream: event handler failed on a batch of {} (attempt {}/{}): {}: {}",
                    len(batch),
                    attempt,
                    self.handler_attempts,
                    type(exc).__name__,
                    self._scrub(excerpt(str(exc))),
                )
                self._status(
                    "error",
                    {"kind": "handler", "attempt": attempt, "error": type(exc).__name__},
                )
            if attempt == self.handler_attempts:
                dropped = True
                logger.error(
                    "stream: dropped a batch of {} events ({} .. {}); the scheduled reconcile "
                    "will heal it",
                    len(batch),
                    batch[0].id,
                    batch[-1].id,
                )
                break
            if self._stop.is_set():
                break
            self._wait(delay)
            delay *= 2
            if self._stop.is_set():
                break
        with self._cond:
            if delivered or dropped:
                # Otherwise (stopping mid-retry) the floor stays: the batch replays next start.
                self._inflight = False
                self._inflight_floor = None
            self._cond.notify_all()

    def _persist(self, final: bool = False) -> None:
        with self._save_lock:
            with self._cond:
                safe = self._safe_position() if self._loaded.is_set() else None
            if safe is not None and safe != self._saved_pos:
                try:
                    self._store.save(safe)
                    self._saved_pos = safe
                except Exception as exc:
                    logger.warning(
                        "stream: cannot save position {} ({}): {}",
                        safe,
                        type(exc).__name__,
                        self._scrub(str(exc)),
                    )
                    self._status("error", {"kind": "state", "error": type(exc).__name__})
            if final:
                try:
                    self._store.flush()
                except Exception as exc:
                    logger.warning(
                        "stream: cannot flush position ({}): {}",
                        type(exc).__name__,
                        self._scrub(str(exc)),
                    )
                    self._status("error", {"kind": "state", "error": type(exc).__name__})

    # -- helpers --------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter, never below the server's ``retry``."""
        raw = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, attempt))
        delay = raw / 2 + random.uniform(0, raw / 2)
        return max(delay, self._retry_floor)

    def _wait(self, seconds: float) -> None:
        if self._interruptible:
            self._stop.wait(seconds)
        else:
            self._clock.sleep(seconds)

    def _lag(self, position: str) -> float | None:
        millis = id_millis(position)
        if millis is None:
            return None
        return self._clock.now().timestamp() - millis / 1000.0

    def _status(self, kind: str, info: dict[str, Any]) -> None:
        if self._on_status is None:
            return
        try:
            self._on_status(kind, info)
        except Exception as exc:  # metrics must never break the stream
            logger.debug("stream: on_status failed: {}", type(exc).__name__)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text
