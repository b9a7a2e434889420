"""What the stream reader and the batcher share: the tuning knobs (``StreamTuning``) and the
running consumer's common ground (``StreamRuntime``: the stop signal and its waits, status
reporting, token scrubbing).

Owns: no I/O and no thread. Must not: let a failing ``on_status`` escape into a stream thread,
or return text that still holds the token.

Waits use the stop ``Event`` (so ``stop()`` interrupts them at once) when the clock is the
system clock; a test clock's ``sleep`` is used as-is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from reconciler.clock import Clock, SystemClock

__all__ = ["StatusCallback", "Stopped", "StreamRuntime", "StreamTuning"]

StatusCallback = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class StreamTuning:
    """How the live-stream consumer paces itself (every duration in seconds).

    Reconnects wait a capped exponential backoff with jitter between ``backoff_base`` and
    ``backoff_cap``; a connection with no id-bearing message for ``heartbeat_timeout`` is
    dropped; ``connect_timeout`` bounds connect, write and pool waits. Indicator events are
    handed over once ``batch_window`` passed since the oldest buffered one or ``batch_max`` are
    buffered; a failing batch is tried ``handler_attempts`` times in all (at least once), the
    delay starting at ``handler_retry_delay`` and doubling. A position reached by heartbeats
    alone is saved at most once per ``save_interval``.
    """

    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    heartbeat_timeout: float = 45.0
    batch_window: float = 1.0
    batch_max: int = 500
    handler_attempts: int = 3
    handler_retry_delay: float = 1.0
    connect_timeout: float = 10.0
    save_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_max < 1:
            raise ValueError("batch_max must be at least 1")

    @property
    def max_buffer(self) -> int:
        """Buffered events past which the reader waits for the worker (back-pressure)."""
        return 10 * self.batch_max


class Stopped(Exception):
    """The consumer is stopping: unwinds the reader out of whatever it was doing."""


class StreamRuntime:
    """The stop signal, the clock, ``on_status`` and the token, shared by both stream threads."""

    def __init__(
        self, token: str, *, clock: Clock | None = None, on_status: StatusCallback | None = None
    ) -> None:
        self._token = token
        self._on_status = on_status
        self.clock: Clock = clock or SystemClock()
        self._interruptible = isinstance(self.clock, SystemClock)
        self.stop_event = threading.Event()

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was asked for."""
        return self.stop_event.is_set()

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, cut short by a stop when on the system clock."""
        if self._interruptible:
            self.stop_event.wait(seconds)
        else:
            self.clock.sleep(seconds)

    def status(self, kind: str, info: dict[str, Any]) -> None:
        """Report to ``on_status``; a failing callback is logged at debug and forgotten."""
        if self._on_status is None:
            return
        try:
            self._on_status(kind, info)
        except Exception as exc:  # metrics must never break the stream
            logger.debug("stream: on_status failed: {}", type(exc).__name__)

    def scrub(self, text: str) -> str:
        """``text`` with the token masked, safe to log."""
        return text.replace(self._token, "***") if self._token else text
