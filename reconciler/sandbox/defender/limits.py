"""Rate limits and fault injection of the Defender emulator.

Owns the per-endpoint call limits Microsoft documents (sliding windows for the whole tenant on the
emulator's monotonic clock; a refused call spends no budget), the same windows for limits given
explicitly (the optional per-minute limit of Graph calls) and the test faults: a hook called
before each request, statuses forced in order per endpoint, and seeded random faults (dropped
connections, 429/500/503, latency, stalls). Rendering a fault as a response is the request
pipeline's (``routing``): this module only decides.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from reconciler.sandbox.defender.core import API_ENDPOINTS, ApiError

# (window seconds, calls) per endpoint, as documented.
RATE_LIMITS: dict[str, tuple[tuple[float, int], ...]] = {
    "list": ((60.0, 100), (3600.0, 1500)),
    "submit": ((60.0, 100), (3600.0, 1500)),
    "delete": ((60.0, 100), (3600.0, 1500)),
    "import": ((60.0, 30),),
    "batch_delete": ((60.0, 30), (3600.0, 1500)),
}

RequestHook = Callable[[str, str, str], None]


class RateLimiter:
    """Sliding windows of accepted-call times per endpoint, on the emulator's monotonic clock."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, float], collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._lock = threading.Lock()

    def admit(self, endpoint: str, now: float, scale: float) -> float | None:
        """Record the call and return None, or return seconds until there is room."""
        windows = tuple(
            (window, int(limit * scale)) for window, limit in RATE_LIMITS.get(endpoint, ())
        )
        return self.admit_windows(endpoint, windows, now)

    def admit_windows(
        self, key: str, windows: tuple[tuple[float, int], ...], now: float
    ) -> float | None:
        """``admit`` for explicit (window seconds, calls) limits counted under ``key``."""
        with self._lock:
            wait = 0.0
            for window, limit in windows:
                cap = max(1, limit)
                calls = self._calls[(key, window)]
                while calls and calls[0] <= now - window:
                    calls.popleft()
                if len(calls) >= cap:
                    wait = max(wait, calls[len(calls) - cap] + window - now)
            if wait > 0:
                return wait
            for window, _ in windows:
                self._calls[(key, window)].append(now)
            return None

    def check(self, endpoint: str, now: float, scale: float) -> None:
        """Admit the call or raise 429 ``TooManyRequests`` with a whole-second Retry-After."""
        _refuse(self.admit(endpoint, now, scale))

    def check_windows(self, key: str, windows: tuple[tuple[float, int], ...], now: float) -> None:
        """``check`` for explicit limits counted under ``key``."""
        _refuse(self.admit_windows(key, windows, now))

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()


def _refuse(wait: float | None) -> None:
    """Raise the 429 of a call that must wait ``wait`` seconds (None: it was admitted)."""
    if wait is not None:
        seconds = max(1, int(-(-wait // 1)))
        raise ApiError(
            429,
            "TooManyRequests",
            f"Rate limit is exceeded. Try again in {seconds} seconds.",
            (("Retry-After", str(seconds)),),
        )


@dataclass(frozen=True)
class Faults:
    p429: float = 0.0
    p500: float = 0.0
    p503: float = 0.0
    p_drop: float = 0.0
    latency: float = 0.0
    retry_after: int = 1
    endpoints: frozenset[str] = API_ENDPOINTS
    p_timeout: float = 0.0
    stall: float = 0.0


class Fault(NamedTuple):
    """An injected answer: ``status`` 0 drops the connection."""

    status: int
    retry_after: int


class FaultInjector:
    """The hook, forced statuses and random faults; thread-safe, reproducible per seed."""

    def __init__(self, seed: int) -> None:
        self.hook: RequestHook | None = None
        self._faults = Faults()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._forced: dict[str, collections.deque[tuple[int, int]]] = {}

    def configure(self, faults: Faults, seed: int) -> None:
        """New random faults; re-seeds the RNG so a run is reproducible."""
        with self._lock:
            self._faults = faults
            self._rng = random.Random(seed)

    def force(self, endpoint: str, statuses: list[int], retry_after: int) -> None:
        with self._lock:
            queue = self._forced.setdefault(endpoint, collections.deque())
            queue.extend((status, retry_after) for status in statuses)

    def clear_forced(self) -> None:
        with self._lock:
            self._forced.clear()

    def draw(self, endpoint: str) -> Fault | None:
        """Forced status first, then random faults; may sleep (latency, stall). None: serve."""
        with self._lock:
            queue = self._forced.get(endpoint)
            forced = queue.popleft() if queue else None
            faults = self._faults
            applies = forced is None and endpoint in faults.endpoints
            chance = faults.p_drop + faults.p429 + faults.p500 + faults.p503 + faults.p_timeout
            # Draw only when a fault is possible, so the sequence depends on matching calls only.
            draw = self._rng.random() if applies and chance > 0 else None
        if forced is not None:
            return Fault(*forced)
        if applies and faults.latency > 0:
            time.sleep(faults.latency)
        if draw is None:
            return None
        edge = 0.0
        for status, chance in (
            (0, faults.p_drop),
            (429, faults.p429),
            (500, faults.p500),
            (503, faults.p503),
        ):
            edge += chance
            if draw < edge:
                return Fault(status, faults.retry_after)
        if draw < edge + faults.p_timeout:
            time.sleep(faults.stall)
        return None
