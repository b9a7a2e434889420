"""Client-side call budgets per Defender endpoint, so a normal run never meets a 429.

Owns: the documented per-endpoint limits (sliding windows on an injected ``Clock``), waiting
for room before a call, and penalties from a server ``Retry-After`` that block one endpoint
until a given time. Must not: make HTTP calls or decide about retries (``client.py`` does).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loguru import logger

from reconciler.clock import Clock, SystemClock

__all__ = ["DEFAULT_LIMITS", "ENDPOINTS", "RateBudgets", "Window"]


@dataclass(frozen=True)
class Window:
    """At most ``limit`` calls in any ``seconds``-long span."""

    limit: int
    seconds: float


#: Endpoint names used for budgets, metrics and logs.
ENDPOINTS = ("list", "submit", "import", "delete", "batch_delete")

_MINUTE = 60.0
_HOUR = 3600.0

#: The limits Microsoft documents per endpoint. The import page states no hourly figure.
DEFAULT_LIMITS: Mapping[str, Sequence[Window]] = {
    "list": (Window(100, _MINUTE), Window(1500, _HOUR)),
    "submit": (Window(100, _MINUTE), Window(1500, _HOUR)),
    "import": (Window(30, _MINUTE),),
    "delete": (Window(100, _MINUTE), Window(1500, _HOUR)),
    "batch_delete": (Window(30, _MINUTE), Window(1500, _HOUR)),
}


class RateBudgets:
    """Sliding-window budgets per endpoint; thread-safe.

    ``acquire(endpoint)`` returns once a call fits every window of that endpoint (and any
    penalty has passed), sleeping on the clock meanwhile; it records the call. ``penalize``
    blocks an endpoint until ``clock.monotonic() + seconds`` (from a 429's Retry-After).
    Endpoints without configured windows are never throttled.
    """

    def __init__(
        self,
        limits: Mapping[str, Sequence[Window]] | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.limits: dict[str, tuple[Window, ...]] = {
            name: tuple(windows)
            for name, windows in (DEFAULT_LIMITS if limits is None else limits).items()
        }
        self.clock: Clock = clock or SystemClock()
        self._calls: dict[str, deque[float]] = {name: deque() for name in self.limits}
        self._blocked_until: dict[str, float] = {}
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds spent waiting for room (for tests and metrics)

    def _wait_needed(self, endpoint: str, now: float) -> float:
        wait = max(0.0, self._blocked_until.get(endpoint, 0.0) - now)
        windows = self.limits.get(endpoint, ())
        calls = self._calls.get(endpoint)
        if not windows or calls is None:
            return wait
        longest = max(w.seconds for w in windows)
        while calls and calls[0] <= now - longest:
            calls.popleft()
        for window in windows:
            # Calls still inside this window (a call exactly `seconds` ago has left it).
            inside = [t for t in calls if t > now - window.seconds]
            if len(inside) >= window.limit:
                oldest_blocking = inside[len(inside) - window.limit]
                wait = max(wait, oldest_blocking + window.seconds - now)
        return wait

    def acquire(self, endpoint: str) -> float:
        """Wait until a call to ``endpoint`` fits its budget, record it; returns seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock.monotonic()
                wait = self._wait_needed(endpoint, now)
                if wait <= 0:
                    calls = self._calls.get(endpoint)
                    if calls is not None:
                        calls.append(now)
                    self.waited += waited
                    return waited
            logger.debug("rate budget: waiting {:.1f} s before the next {} call", wait, endpoint)
            self.clock.sleep(wait)
            waited += wait

    def penalize(self, endpoint: str, seconds: float) -> None:
        """Block ``endpoint`` for ``seconds`` from now (keeps the later of two penalties)."""
        with self._lock:
            until = self.clock.monotonic() + max(0.0, seconds)
            self._blocked_until[endpoint] = max(self._blocked_until.get(endpoint, 0.0), until)

    def blocked_for(self, endpoint: str) -> float:
        """Seconds until ``endpoint`` is unblocked by penalties (0 when free)."""
        with self._lock:
            return max(0.0, self._blocked_until.get(endpoint, 0.0) - self.clock.monotonic())
