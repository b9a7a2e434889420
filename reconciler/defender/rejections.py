"""Bodies Defender refused, remembered by content so they are not re-sent on every run.

A value Defender will not act on (a Microsoft service domain, say) is refused on every run in
the same way. Sending it again each time costs import calls, and when Defender rejects a whole
import call for one bad item it costs its neighbours their batch too. So an item Defender
refused is remembered, keyed by a digest of its exact body, for ``ttl`` seconds: until then it
is answered locally as refused, with the server's reason. A changed body (the indicator was
edited in OpenCTI) has another digest and is sent at once.

Owns the memory only (in process: a restart forgets it, which costs one more try). Must not do
I/O or decide anything about what is sent besides "refused earlier".
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.clock import Clock, SystemClock

__all__ = ["RejectionMemory", "body_digest"]


def body_digest(body: Mapping[str, Any]) -> str:
    """A digest of a body's exact content (key order does not matter)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class _Refusal:
    reason: str
    until: float


class RejectionMemory:
    """Refused bodies and the server's reason, each for ``ttl`` seconds (0 = remember none)."""

    def __init__(self, ttl: float, *, clock: Clock | None = None) -> None:
        self.ttl = ttl
        self._clock: Clock = clock or SystemClock()
        self._refused: dict[str, _Refusal] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._refused)

    def reason(self, body: Mapping[str, Any]) -> str | None:
        """The reason a body was refused, while that is remembered; else ``None``."""
        if not self._refused:
            return None
        key = body_digest(body)
        now = self._clock.monotonic()
        with self._lock:
            refusal = self._refused.get(key)
            if refusal is None:
                return None
            if refusal.until <= now:
                del self._refused[key]
                return None
            return refusal.reason

    def remember(self, body: Mapping[str, Any], reason: str) -> None:
        if self.ttl <= 0:
            return
        until = self._clock.monotonic() + self.ttl
        with self._lock:
            self._refused[body_digest(body)] = _Refusal(reason, until)
