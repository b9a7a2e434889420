"""One pass of the sightings: new alerts since the checkpoint → hits of our indicators →
sightings in OpenCTI → checkpoint moved on.

Each alert is counted once, across restarts and replicas, by two means:

- the checkpoint (``reconciler.state_path``, else memory): the end of the last window read
  and the ids of the alerts read near it. Windows select alerts by last update; one starts
  ``overlap`` before the checkpoint (alerts reach the API late) and the ids read near the end
  are skipped;
- the sightings themselves: each counted alert is linked to its sighting as an external
  reference (the alert's id and link), and the ``SightingSink`` counts only alerts not linked
  yet. A replay (a lost checkpoint, another replica, a crash between write and save) adds
  nothing.

The checkpoint only moves when every hit was written; otherwise the next pass reads the window
again. With no checkpoint, the first pass looks ``lookback`` back. Before the first full
reconcile (which says what we own) a pass does nothing. Pure orchestration behind seams.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from reconciler.clock import Clock
from reconciler.errors import ReconcilerError
from reconciler.model import IndicatorKey
from reconciler.sightings.hits import Hit, match_hits, read_alert

__all__ = [
    "AlertSource",
    "Checkpoint",
    "CheckpointStore",
    "FileCheckpoint",
    "MemoryCheckpoint",
    "SightingSink",
    "SightingsJob",
    "SightingsReport",
    "SinkOutcome",
]


class AlertSource(Protocol):
    """Alerts raised by custom indicators (``GraphAlerts`` satisfies it)."""

    def alerts(self, since: datetime, until: datetime) -> Iterable[dict[str, Any]]: ...


@dataclass
class SinkOutcome:
    """What a ``SightingSink.record`` did, by OpenCTI indicator id."""

    added: dict[str, int] = field(default_factory=dict)  # alerts newly counted
    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0


class SightingSink(Protocol):
    """Sightings in OpenCTI (``OpenCTISightings`` satisfies it)."""

    def record(self, hits: Mapping[str, Sequence[Hit]]) -> SinkOutcome:
        """Count each hit not counted yet on its indicator's sighting; never raises for one
        indicator's failure (recorded), raises ``ReconcilerError`` when OpenCTI is out."""
        ...


@dataclass(frozen=True)
class Checkpoint:
    until: datetime
    seen: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {"until": self.until.isoformat(), "seen": sorted(self.seen)}

    @classmethod
    def from_json(cls, doc: object) -> Checkpoint | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("until"), str):
            return None
        try:
            until = datetime.fromisoformat(doc["until"])
        except ValueError:
            return None
        seen = doc.get("seen")
        ids = frozenset(s for s in seen if isinstance(s, str)) if isinstance(seen, list) else ()
        return cls(until, frozenset(ids))


class CheckpointStore(Protocol):
    def load(self) -> Checkpoint | None: ...

    def save(self, checkpoint: Checkpoint) -> None: ...


class MemoryCheckpoint:
    """A checkpoint for the life of the process (no ``state_path``)."""

    def __init__(self) -> None:
        self.checkpoint: Checkpoint | None = None

    def load(self) -> Checkpoint | None:
        return self.checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint


class FileCheckpoint:
    """A checkpoint in a JSON file, replaced atomically (next to the stream position)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> Checkpoint | None:
        try:
            return Checkpoint.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning(
                "sightings checkpoint {} unreadable ({}); starting afresh", self.path, exc
            )
            return None

    def save(self, checkpoint: Checkpoint) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(checkpoint.to_json(), fh)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ReconcilerError(f"cannot write sightings checkpoint {self.path}: {exc}") from exc


@dataclass
class SightingsReport:
    """What one pass did (for logs and metrics)."""

    alerts: int = 0  # custom-indicator alerts read in the window
    hits: int = 0  # (alert, indicator) pairs matched
    counted: int = 0  # alerts newly counted on sightings
    sightings: int = 0  # sightings created or updated
    failed: int = 0
    calls: int = 0
    skipped: str | None = None
    error: str | None = None


class SightingsJob:
    """Reads new alerts and records them; one pass at a time (the controller's job)."""

    def __init__(
        self,
        *,
        alerts: AlertSource,
        sink: SightingSink,
        checkpoint: CheckpointStore,
        owned: Callable[[], Mapping[IndicatorKey, tuple[str, ...]] | None],
        clock: Clock,
        lookback: timedelta = timedelta(days=1),
        overlap: timedelta = timedelta(minutes=10),
    ) -> None:
        self.source = alerts
        self.sink = sink
        self.checkpoint = checkpoint
        self.owned = owned
        self.clock = clock
        self.lookback = lookback
        self.overlap = overlap

    def run(self) -> SightingsReport:
        """One pass; never raises (an error is reported, the window read again next time)."""
        report = SightingsReport()
        owned = self.owned()
        if owned is None:
            report.skipped = "no full reconcile yet"
            return report
        now = self.clock.now()
        try:
            last = self.checkpoint.load()
            since = last.until - self.overlap if last is not None else now - self.lookback
            skip = last.seen if last is not None else frozenset()
            hits: list[Hit] = []
            recent: set[str] = set()
            for alert in self.source.alerts(since, now):
                hit = read_alert(alert)
                if hit is None:
                    continue
                report.alerts += 1
                if hit.updated >= now - self.overlap:
                    recent.add(hit.alert_id)
                if hit.alert_id not in skip:
                    hits.append(hit)
            matched = match_hits(hits, owned)
            report.hits = sum(len(v) for v in matched.values())
            outcome = self.sink.record(matched) if matched else SinkOutcome()
            report.calls = outcome.calls
            report.counted = sum(outcome.added.values())
            report.sightings = sum(1 for n in outcome.added.values() if n)
            report.failed = len(outcome.failed)
            if not outcome.failed:
                self.checkpoint.save(Checkpoint(now, frozenset(recent)))
            else:
                logger.warning(
                    "sightings: {} indicators not written; their window is read again next time",
                    len(outcome.failed),
                )
        except ReconcilerError as exc:
            report.error = str(exc)
            logger.error("sightings pass failed: {}", exc)
            return report
        if report.counted or report.hits:
            logger.info(
                "sightings: {} alerts read, {} hits of our indicators, {} newly counted on {} "
                "sightings",
                report.alerts,
                report.hits,
                report.counted,
                report.sightings,
            )
        return report
