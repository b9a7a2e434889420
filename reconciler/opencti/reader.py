"""The reading side of the live-stream consumer: one thread that connects to
``/stream/{id}``, reads SSE messages, feeds the batcher, and reconnects for ever.

Owns: loading the stored position, the HTTP request (headers, first-run recovery), the
connection and its reconnect/backoff, the heartbeat watchdog, and turning each message into
a batcher call. Must not: call ``on_events`` (the batcher's worker does), save positions,
raise out of its thread, or log the token.

On the wire, the way pycti does it: ``GET {url}/stream/{stream_id}`` with ``authorization:
Bearer``, ``Last-Event-ID`` (``0-0`` on a first run, plus ``?recover=<now ISO>`` so the server
replays the current set as creates, harmless, until the stream reaches that moment),
``listen-delete``, ``no-dependencies``, ``with-inferences: false``, ``Accept:
text/event-stream``.

Behaviour, in the order a message travels:

- Messages without an ``id`` are ignored, like pycti (``connected`` is only logged). A
  ``retry:`` line sets the minimum reconnect delay.
- ``heartbeat`` and every other id-bearing message advance the read position.
- ``create``/``update``/``delete``/``merge`` (dispatch on the SSE event name, never on the
  envelope ``type``) are JSON-decoded; malformed JSON is logged, reported as
  ``on_status("error", {"kind": "malformed", ...})`` and skipped; non-indicator objects are
  skipped. Both still advance the position. Indicator events go to the batcher, which may make
  the reader wait when its buffer is full.
- Connection error, EOF, non-2xx (401 = bad token or unknown stream, logged as such), or no
  id-bearing message for ``heartbeat_timeout`` seconds: reconnect after a capped exponential
  backoff with jitter (never below the server's ``retry``), resuming with ``Last-Event-ID`` =
  the newest position read (buffered events survive reconnects in memory). It never gives up;
  the scheduled reconcile keeps running meanwhile.
- A stop wakes a blocked read at once by shutting the socket down (``abort``).

The heartbeat watchdog runs on real monotonic time because it measures real I/O.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import threading
import time
from datetime import UTC, datetime

import httpx
from loguru import logger

from reconciler.errors import excerpt
from reconciler.opencti.batcher import Batcher
from reconciler.opencti.events import DATA_EVENTS, decode_event, id_millis
from reconciler.opencti.runtime import Stopped, StreamRuntime, StreamTuning
from reconciler.opencti.sse import SSEMessage, SSEParser
from reconciler.opencti.state import PositionStore

__all__ = ["FIRST_POSITION", "StreamReader"]

#: Position sent on a first run, with ``?recover=``, as pycti does.
FIRST_POSITION = "0-0"


def _iso_millis(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class StreamReader:
    """Reads one OpenCTI live stream into a ``Batcher`` until the runtime is stopped."""

    def __init__(
        self,
        stream_url: str,
        token: str,
        *,
        batcher: Batcher,
        store: PositionStore,
        runtime: StreamRuntime,
        tuning: StreamTuning,
        listen_delete: bool,
        no_dependencies: bool,
        ssl_verify: bool | str,
    ) -> None:
        self.stream_url = stream_url
        self._token = token
        self._batcher = batcher
        self._store = store
        self._rt = runtime
        self._tuning = tuning
        self._listen_delete = listen_delete
        self._no_dependencies = no_dependencies
        self._ssl_verify = ssl_verify
        self._recover_until: str | None = None
        self._recover_ms: int | None = None
        self._retry_floor = 0.0
        self.connected = False
        """True while a stream response is open."""
        self._response: httpx.Response | None = None
        self._response_lock = threading.Lock()
        self.last_event_at: datetime | None = None
        """Wall time of the last object event received (any type)."""
        self.last_message_at: datetime | None = None
        """Wall time of the last id-bearing message (heartbeats included)."""

    # -- thread body ------------------------------------------------------------------------

    def run(self) -> None:
        """The reader thread's body: load the position, then read and reconnect until stopped."""
        try:
            self._load_position()
        finally:
            self._batcher.mark_loaded()
        attempt = 0
        with httpx.Client(verify=self._verify(), timeout=self._timeout()) as client:
            while not self._rt.stopping:
                healthy = False
                try:
                    healthy = self._read_once(client)
                except Stopped:
                    break
                except Exception as exc:  # the reader thread must never die
                    if self._rt.stopping:
                        break
                    logger.error(
                        "stream reader failed unexpectedly: {}: {}",
                        type(exc).__name__,
                        self._rt.scrub(str(exc)),
                    )
                    self._rt.status("error", {"kind": "internal", "error": type(exc).__name__})
                if self._rt.stopping:
                    break
                attempt = 0 if healthy else attempt + 1
                delay = self._backoff(attempt)
                logger.info("stream: reconnecting in {:.2f} s", delay)
                self._rt.wait(delay)

    def abort(self) -> None:
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

    def _verify(self) -> bool | ssl.SSLContext:
        if isinstance(self._ssl_verify, str):
            return ssl.create_default_context(cafile=self._ssl_verify)
        return self._ssl_verify

    def _timeout(self) -> httpx.Timeout:
        connect = self._tuning.connect_timeout
        return httpx.Timeout(
            connect=connect, read=self._tuning.heartbeat_timeout, write=connect, pool=connect
        )

    def _load_position(self) -> None:
        position: str | None = None
        for attempt in range(3):
            if self._rt.stopping:
                return
            try:
                position = self._store.load()
                break
            except Exception as exc:
                logger.error(
                    "stream: cannot load the stored position ({}): {}",
                    type(exc).__name__,
                    self._rt.scrub(str(exc)),
                )
                self._rt.status("error", {"kind": "state", "error": type(exc).__name__})
                if attempt < 2:
                    self._rt.wait(self._backoff(attempt + 1))
        self._batcher.resume(position)
        if position is None:
            # First run: ask the server to replay the current set, like pycti does.
            now = self._rt.clock.now()
            self._recover_until = _iso_millis(now)
            self._recover_ms = int(now.timestamp() * 1000)
            logger.info("stream: no stored position, recovering up to {}", self._recover_until)
        else:
            logger.info("stream: resuming after position {}", position)

    # -- one connection ---------------------------------------------------------------------

    def _request_params(self) -> tuple[dict[str, str], dict[str, str]]:
        position = self._batcher.read_position
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
                if self._rt.stopping:
                    raise Stopped
                if resp.status_code != 200:
                    self._report_refusal(resp)
                    return False
                self.connected = True
                logger.info(
                    "stream: connected to {} after {}", self.stream_url, headers["Last-Event-ID"]
                )
                self._rt.status("connected", {"position": headers["Last-Event-ID"]})
                healthy = self._consume(resp)
                if not self._rt.stopping:
                    logger.warning("stream: closed by the server, will reconnect")
        except httpx.HTTPError as exc:
            if self._rt.stopping:
                raise Stopped from exc
            logger.warning(
                "stream: connection failed: {}: {}", type(exc).__name__, self._rt.scrub(str(exc))
            )
            self._rt.status("error", {"kind": "connection", "error": type(exc).__name__})
        finally:
            with self._response_lock:
                self._response = None
            if self.connected:
                self.connected = False
                self._rt.status("disconnected", {"position": self._batcher.read_position})
        if self._rt.stopping:
            raise Stopped
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
                "stream: {} answered {}: {}",
                self.stream_url,
                resp.status_code,
                self._rt.scrub(body),
            )
        self._rt.status("error", {"kind": "http", "status": resp.status_code})

    def _consume(self, resp: httpx.Response) -> bool:
        parser = SSEParser()
        healthy = False
        last_id_at = time.monotonic()
        for line in resp.iter_lines():
            if self._rt.stopping:
                raise Stopped
            message = parser.feed(line)
            now = time.monotonic()
            if message is not None:
                if message.retry is not None:
                    self._retry_floor = message.retry / 1000.0
                if message.id is not None:
                    healthy = True
                    last_id_at = now
                self._handle(message)
            if now - last_id_at > self._tuning.heartbeat_timeout:
                # Bytes arrive but no heartbeat: treat the stream as dead, like pycti's watchdog.
                logger.warning("stream: no heartbeat for {:.0f} s, reconnecting", now - last_id_at)
                self._rt.status("error", {"kind": "heartbeat_timeout"})
                break
        return healthy

    # -- one message ------------------------------------------------------------------------

    def _handle(self, message: SSEMessage) -> None:
        if message.id is None:
            if message.event == "connected":
                logger.debug("stream: server says connected: {}", excerpt(message.data))
            return  # like pycti: a message without an id carries no position
        self.last_message_at = self._rt.clock.now()
        if message.event in DATA_EVENTS:
            self._handle_data(message.id, message.event, message.data)
            return
        if message.event == "heartbeat":
            self._rt.status("heartbeat", {"id": message.id, "lag": self._lag(message.id)})
        elif message.event == "no-recover":
            logger.warning("stream: server cannot recover: {}", excerpt(message.data))
        self._batcher.advance(message.id)

    def _handle_data(self, position: str, name: str, raw: str) -> None:
        try:
            event = decode_event(position, name, raw)
        except ValueError as exc:
            logger.error(
                "stream: skipping malformed {} event {}: {}", name, position, excerpt(str(exc))
            )
            self._rt.status("error", {"kind": "malformed", "id": position, "event": name})
            self._batcher.advance(position)
            return
        self.last_event_at = self._rt.clock.now()
        self._rt.status(
            "event",
            {
                "id": position,
                "event": name,
                "type": event.data.get("type"),
                "indicator": event.is_indicator,
                "lag": self._lag(position),
            },
        )
        if event.is_indicator:
            self._batcher.enqueue(event)
        else:
            self._batcher.advance(position)

    # -- helpers ----------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter, never below the server's ``retry``."""
        raw = min(self._tuning.backoff_cap, self._tuning.backoff_base * 2.0 ** max(0, attempt))
        delay = raw / 2 + random.uniform(0, raw / 2)
        return max(delay, self._retry_floor)

    def _lag(self, position: str) -> float | None:
        millis = id_millis(position)
        if millis is None:
            return None
        return self._rt.clock.now().timestamp() - millis / 1000.0
