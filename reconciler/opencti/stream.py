"""The OpenCTI live-stream consumer: reads ``/stream/{id}`` and hands indicator events over in
micro-batches, keeping the stream position so a restart resumes where it stopped.

Owns: ``StreamConsumer``, the facade that wires the parts together and runs their two threads
(the reader and the worker), and the stop sequence. Must not: decide what an event means for
Defender (the controller does a scoped reconcile per batch), raise into its caller's thread,
stop the process, or log the token. The parts, each owning its share of the behaviour:

- ``sse``: SSE line parsing (``SSEMessage``, ``SSEParser``);
- ``events``: the event vocabulary and ``StreamEvent`` (internal ids, stream-id timestamps);
- ``reader``: connection, request headers, reconnect/backoff, heartbeat watchdog, and what each
  message does to the position;
- ``batcher``: the micro-batch buffer, position bookkeeping and saving, the worker that calls
  ``on_events`` with retries;
- ``runtime``: the tuning knobs (``StreamTuning``) and what both threads share.

Why not pycti's ``OpenCTIConnectorHelper.listen_stream``: it kills its own process (SIGTERM
through ``sys.excepthook``) when the callback raises, when a reconnect fails (stream server
down, 401, 410), when it is stopped, and when its 45 s heartbeat watchdog fires (pycti's
``ListenStream`` thread and its watchdog). That contradicts "the controller stays up and catches
up when the stream server is killed and restarted" and "SIGTERM exits 0". So we speak the same
small SSE protocol ourselves with httpx, the way pycti does on the wire (the reader's docstring
lists the request). pycti's API client is used only to keep the position in OpenCTI's connector
state (``state.OpenCTIConnectorStore``); any ``PositionStore`` works.

``stop()`` wakes every wait, shuts the socket down, abandons buffered events that were not
handed over yet (they are replayed after a restart), lets a running ``on_events`` finish
within the timeout, saves and flushes the position. Threads are daemons so a hung handler can
never hold the process past shutdown; ``stop()`` joins them within its timeout.

The names that lived here before the split (``SSEMessage``, ``SSEParser``, ``StreamEvent``,
``STIX_EXT_OCTI``, ``DATA_EVENTS``, ``id_millis``) are still importable from this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from loguru import logger

from reconciler.clock import Clock
from reconciler.opencti.batcher import Batcher
from reconciler.opencti.events import DATA_EVENTS, STIX_EXT_OCTI, StreamEvent, id_millis
from reconciler.opencti.reader import StreamReader
from reconciler.opencti.runtime import StatusCallback, StreamRuntime, StreamTuning
from reconciler.opencti.sse import SSEMessage, SSEParser
from reconciler.opencti.state import PositionStore

__all__ = [
    "DATA_EVENTS",
    "STIX_EXT_OCTI",
    "SSEMessage",
    "SSEParser",
    "StatusCallback",
    "StreamConsumer",
    "StreamEvent",
    "StreamTuning",
    "id_millis",
]

#: ``StreamTuning()``: what a consumer built without ``tuning`` uses.
DEFAULT_TUNING = StreamTuning()


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

    ``listen_delete``/``no_dependencies`` are sent to the server as the headers of the same
    name; ``ssl_verify`` is a bool or a CA bundle path; ``tuning`` paces everything else.
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
        tuning: StreamTuning = DEFAULT_TUNING,
        clock: Clock | None = None,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.tuning = tuning
        self._runtime = StreamRuntime(token, clock=clock, on_status=on_status)
        self._batcher = Batcher(
            on_events=on_events, store=state, tuning=tuning, runtime=self._runtime
        )
        self._reader = StreamReader(
            f"{url.rstrip('/')}/stream/{stream_id}",
            token,
            batcher=self._batcher,
            store=state,
            runtime=self._runtime,
            tuning=tuning,
            listen_delete=listen_delete,
            no_dependencies=no_dependencies,
            ssl_verify=ssl_verify,
        )
        self._reader_thread: threading.Thread | None = None
        self._worker_thread: threading.Thread | None = None

    # -- public surface -------------------------------------------------------------------

    @property
    def stream_url(self) -> str:
        """``{url}/stream/{stream_id}``."""
        return self._reader.stream_url

    @property
    def connected(self) -> bool:
        """True while a stream response is open."""
        return self._reader.connected

    @property
    def position(self) -> str | None:
        """Newest position up to which every indicator event was handled (what gets saved)."""
        return self._batcher.position

    @property
    def saved_position(self) -> str | None:
        """Last position written to the store (or loaded from it)."""
        return self._batcher.saved_position

    @property
    def last_event_at(self) -> datetime | None:
        """Wall time of the last object event received (any type)."""
        return self._reader.last_event_at

    @property
    def last_message_at(self) -> datetime | None:
        """Wall time of the last id-bearing message (heartbeats included)."""
        return self._reader.last_message_at

    def start(self) -> None:
        """Start the reader and worker threads; returns at once."""
        if self._reader_thread is not None:
            raise RuntimeError("StreamConsumer already started")
        self._reader_thread = threading.Thread(
            target=self._reader.run, name="opencti-stream-reader", daemon=True
        )
        self._worker_thread = threading.Thread(
            target=self._batcher.run,
            args=(self._settle,),
            name="opencti-stream-worker",
            daemon=True,
        )
        self._reader_thread.start()
        self._worker_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking events, let a running batch finish, save the position; bounded."""
        deadline = time.monotonic() + timeout
        self._runtime.stop_event.set()
        self._batcher.wake()
        self._reader.abort()
        threads = (self._reader_thread, self._worker_thread)
        for thread in threads:
            # stop() may be called from on_events itself (the worker): never join oneself.
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [
            t.name
            for t in threads
            if t is not None and t.is_alive() and t is not threading.current_thread()
        ]
        if alive:
            logger.warning("stream consumer: {} still busy after {} s", ", ".join(alive), timeout)
        else:
            logger.info(
                "stream consumer stopped at position {}", self._batcher.saved_position or "none"
            )

    def _settle(self) -> None:
        """Worker, before its final save: let the reader finish its last message."""
        reader = self._reader_thread
        if reader is not None and reader is not threading.current_thread():
            reader.join(1.0)
