"""The micro-batch side of the live-stream consumer: buffers indicator events, hands them to
``on_events`` from the worker thread with retries, and keeps the stream position saved.

Owns: the buffer, the read and safe positions, the position store's ``save``/``flush`` while
running, and the worker loop. Must not: touch the network, parse events, raise into the
worker's caller, or log the token. The reader feeds it (``resume``, ``enqueue``, ``advance``)
and the facade starts and stops it.

Behaviour:

- Indicator events are buffered and handed to ``on_events`` once ``batch_window`` seconds
  passed since the oldest buffered event, or ``batch_max`` are buffered (at most ``batch_max``
  per call, in stream order). The reader keeps reading (heartbeats included) while
  ``on_events`` runs, so a slow handler never makes the server drop us; past
  ``10 * batch_max`` buffered events the reader waits.
- The position saved to the store is the newest one up to which every indicator event has been
  handed over and returned (at-least-once; a replay is harmless because the reconcile is
  idempotent). It is saved after each batch and, for heartbeats alone, at most once per
  ``save_interval``; nothing is saved before the stored position was loaded.
- ``on_events`` raising: logged and reported, the same batch is retried ``handler_attempts``
  times in all with a doubling delay; then it is dropped with an error log and the position
  moves past it: the scheduled full reconcile heals whatever it would have changed.
- Stopping abandons buffered events that were not handed over yet (they are replayed after a
  restart), lets a running ``on_events`` finish (a batch stopped mid-retry keeps its floor, so
  it replays too), then saves and flushes the position.

Batching runs on real monotonic time because it measures real I/O.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from reconciler.errors import excerpt
from reconciler.opencti.events import StreamEvent
from reconciler.opencti.runtime import Stopped, StreamRuntime, StreamTuning
from reconciler.opencti.state import PositionStore

__all__ = ["Batcher"]


@dataclass
class _Buffered:
    event: StreamEvent
    floor: str | None  # position read just before this event: safe to persist until delivered
    added: float  # time.monotonic() when buffered


class Batcher:
    """The buffer between the reader and ``on_events``, and the position bookkeeping."""

    def __init__(
        self,
        *,
        on_events: Callable[[list[StreamEvent]], None],
        store: PositionStore,
        tuning: StreamTuning,
        runtime: StreamRuntime,
    ) -> None:
        self._on_events = on_events
        self._store = store
        self._tuning = tuning
        self._rt = runtime
        self._attempts = max(1, tuning.handler_attempts)
        self._cond = threading.Condition()
        self._pending: deque[_Buffered] = deque()
        self._inflight = False
        self._inflight_floor: str | None = None
        self._read_pos: str | None = None
        self._saved_pos: str | None = None
        self._loaded = threading.Event()
        self._save_lock = threading.Lock()

    # -- positions --------------------------------------------------------------------------

    @property
    def read_position(self) -> str | None:
        """Newest position read from the stream (what a reconnect resumes after)."""
        with self._cond:
            return self._read_pos

    @property
    def position(self) -> str | None:
        """Newest position up to which every indicator event was handled (what gets saved)."""
        with self._cond:
            return self._safe_position()

    @property
    def saved_position(self) -> str | None:
        """Last position written to the store (or loaded from it)."""
        return self._saved_pos

    def _safe_position(self) -> str | None:
        if self._inflight:
            return self._inflight_floor
        if self._pending:
            return self._pending[0].floor
        return self._read_pos

    # -- reader side ------------------------------------------------------------------------

    def resume(self, position: str | None) -> None:
        """Start from the position loaded from the store (already saved, by definition)."""
        with self._cond:
            self._read_pos = position
            self._saved_pos = position

    def mark_loaded(self) -> None:
        """The stored position was loaded (or loading gave up): saving may start."""
        self._loaded.set()

    def enqueue(self, event: StreamEvent) -> None:
        """Buffer an indicator event read at ``event.id``; waits while the buffer is full.

        Raises ``Stopped`` when the consumer is stopping.
        """
        with self._cond:
            while len(self._pending) >= self._tuning.max_buffer and not self._rt.stopping:
                self._cond.wait(0.5)  # back-pressure: let the worker catch up
            if self._rt.stopping:
                raise Stopped
            self._pending.append(_Buffered(event, self._read_pos, time.monotonic()))
            self._read_pos = event.id
            self._cond.notify_all()

    def advance(self, position: str) -> None:
        """The stream was read up to ``position`` with nothing to hand over."""
        with self._cond:
            self._read_pos = position
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every wait on the buffer (after the stop signal was set)."""
        with self._cond:
            self._cond.notify_all()

    # -- worker -----------------------------------------------------------------------------

    def run(self, settle: Callable[[], None]) -> None:
        """The worker thread's body: batches and saves until stopping, never raises.

        ``settle`` runs after the loop, before the final save (the facade lets the reader
        finish its last message there, so that save is as new as possible).
        """
        last_save = float("-inf")
        while not self._rt.stopping:
            try:
                batch = self._next_batch(last_save)
                if batch is not None:
                    self._deliver(batch)
                if self._rt.stopping:
                    break
                self._persist()
                last_save = time.monotonic()
            except Exception as exc:  # the worker thread must never die
                logger.error(
                    "stream worker failed: {}: {}", type(exc).__name__, self._rt.scrub(str(exc))
                )
                self._rt.status("error", {"kind": "internal", "error": type(exc).__name__})
                self._rt.wait(1.0)
        settle()
        self._persist(final=True)

    def _next_batch(self, last_save: float) -> list[StreamEvent] | None:
        """Wait until a batch is due (returned) or a save is due or stopping (None)."""
        window, most = self._tuning.batch_window, self._tuning.batch_max
        with self._cond:
            while not self._rt.stopping:
                now = time.monotonic()
                timeout: float | None = None
                if self._pending:
                    due = self._pending[0].added + window
                    if len(self._pending) >= most or now >= due:
                        count = min(most, len(self._pending))
                        taken = [self._pending.popleft() for _ in range(count)]
                        self._inflight = True
                        self._inflight_floor = taken[0].floor
                        self._cond.notify_all()  # the reader may wait on a full buffer
                        return [item.event for item in taken]
                    timeout = due - now
                safe = self._safe_position()
                if safe is not None and safe != self._saved_pos and self._loaded.is_set():
                    save_due = last_save + self._tuning.save_interval
                    if now >= save_due:
                        return None
                    timeout = save_due - now if timeout is None else min(timeout, save_due - now)
                self._cond.wait(timeout)
        return None

    def _deliver(self, batch: list[StreamEvent]) -> None:
        delay = self._tuning.handler_retry_delay
        delivered = dropped = False
        for attempt in range(1, self._attempts + 1):
            try:
                self._on_events(list(batch))
                delivered = True
                break
            except Exception as exc:
                self._report_failure(batch, attempt, exc)
            if attempt == self._attempts:
                dropped = True
                logger.error(
                    "stream: dropped a batch of {} events ({} .. {}); the scheduled reconcile "
                    "will heal it",
                    len(batch),
                    batch[0].id,
                    batch[-1].id,
                )
                break
            if self._rt.stopping:
                break
            self._rt.wait(delay)
            delay *= 2
            if self._rt.stopping:
                break
        with self._cond:
            if delivered or dropped:
                # Otherwise (stopping mid-retry) the floor stays: the batch replays next start.
                self._inflight = False
                self._inflight_floor = None
            self._cond.notify_all()

    def _report_failure(self, batch: list[StreamEvent], attempt: int, exc: Exception) -> None:
        logger.error(
            "stream: event handler failed on a batch of {} (attempt {}/{}): {}: {}",
            len(batch),
            attempt,
            self._attempts,
            type(exc).__name__,
            self._rt.scrub(excerpt(str(exc))),
        )
        self._rt.status(
            "error",
            {"kind": "handler", "attempt": attempt, "error": type(exc).__name__},
        )

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
                        self._rt.scrub(str(exc)),
                    )
                    self._rt.status("error", {"kind": "state", "error": type(exc).__name__})
            if final:
                try:
                    self._store.flush()
                except Exception as exc:
                    logger.warning(
                        "stream: cannot flush position ({}): {}",
                        type(exc).__name__,
                        self._rt.scrub(str(exc)),
                    )
                    self._rt.status("error", {"kind": "state", "error": type(exc).__name__})
