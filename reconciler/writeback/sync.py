"""Keeps each OpenCTI indicator's deployment references equal to its status, with the fewest
OpenCTI calls: only indicators whose status changed since it was last written (or whose
references changed in OpenCTI, see ``forget``) are read and edited.

``WriteBack.sync`` is handed the statuses of a run. It remembers, per indicator, a hash of the
status OpenCTI shows (as read, or as written): an unchanged status costs nothing, not even a
read, so a run in which nothing changed sends nothing to OpenCTI. The others are read in
batches (our references on them), compared (``references.diff``) and edited through the
``ReferenceStore``. An indicator whose edit failed is not remembered: the next run retries it.
Nothing here touches Defender; a failure is reported, never raised to the run.

Pure orchestration behind the ``ReferenceStore`` seam (``reconciler.opencti.writeback``).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from reconciler.errors import ReconcilerError
from reconciler.writeback.references import Attached, Edits, ReferenceStyle, diff
from reconciler.writeback.status import Status

__all__ = ["Readback", "ReferenceStore", "StoreOutcome", "SyncReport", "WriteBack"]


@dataclass
class StoreOutcome:
    """What a ``ReferenceStore.write`` did: failures by indicator id, and its OpenCTI calls."""

    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0


@dataclass
class Readback:
    """Our references on each indicator read (an id OpenCTI does not know is absent), each
    indicator's ``updated_at`` as read, and the calls it took."""

    refs: dict[str, list[Attached]] = field(default_factory=dict)
    stamps: dict[str, str] = field(default_factory=dict)
    calls: int = 0


class ReferenceStore(Protocol):
    """Our references on OpenCTI indicators (``OpenCTIReferences`` satisfies it)."""

    def read(self, opencti_ids: Sequence[str]) -> Readback:
        """Raises ``ReconcilerError`` when OpenCTI cannot answer."""
        ...

    def stamps(self, opencti_ids: Sequence[str]) -> tuple[dict[str, str], int]:
        """Each indicator's ``updated_at`` now, and the calls it took."""
        ...

    def write(self, edits: Edits) -> StoreOutcome:
        """Apply ``edits``; item failures are returned, not raised."""
        ...


@dataclass
class SyncReport:
    """What one write-back did (for logs and metrics)."""

    checked: int = 0  # statuses handed in
    changed: int = 0  # of which not as OpenCTI shows them (as far as we know)
    read: int = 0  # indicators whose references were read
    edits: int = 0  # attach + patch + detach sent
    failed: int = 0  # indicators left for the next run
    calls: int = 0  # OpenCTI calls
    error: str | None = None

    def summary(self) -> str:
        text = (
            f"write-back: {self.checked} statuses, {self.changed} changed, {self.edits} edits "
            f"in {self.calls} OpenCTI calls"
        )
        if self.failed:
            text += f"; {self.failed} indicators left for the next run"
        if self.error:
            text += f"; {self.error}"
        return text


class WriteBack:
    """The write-back of deployment statuses; one caller at a time (the engine's)."""

    def __init__(self, store: ReferenceStore, style: ReferenceStyle, *, read_batch: int = 500):
        self.store = store
        self.style = style
        self.read_batch = read_batch
        #: Per OpenCTI id: hash of the status its references show.
        self._shown: dict[str, int] = {}
        #: Ids whose references changed in OpenCTI since (stream): to be read again.
        self._forgotten: set[str] = set()
        #: Per OpenCTI id whose ``updated_at`` our own edit moved: (the value before any edit
        #: of ours, the value our last edit left).
        self._moved: dict[str, tuple[str, str]] = {}

    def restamp(self, opencti_id: str, updated_at: str) -> str:
        """The ``updated_at`` an indicator had before our own edits moved it, when ``updated_at``
        is the value our last edit left; otherwise ``updated_at`` (someone edited it since).

        A platform that moves ``updated_at`` on a reference edit would otherwise move the
        expiry computed from it, and the write-back would rewrite Defender after every run."""
        moved = self._moved.get(opencti_id)
        return moved[0] if moved is not None and moved[1] == updated_at else updated_at

    @property
    def has_forgotten(self) -> bool:
        return bool(self._forgotten)

    def forget(self, opencti_ids: Iterable[str]) -> None:
        """Their references changed in OpenCTI (a stream event): read them again next time."""
        for oid in opencti_ids:
            self._shown.pop(oid, None)
            self._forgotten.add(oid)

    def sync(self, statuses: Mapping[str, Status], live_ids: Container[str]) -> SyncReport:
        """Bring every indicator of ``statuses`` to show its status; never raises."""
        report = SyncReport(checked=len(statuses))
        todo = sorted(oid for oid, st in statuses.items() if self._shown.get(oid) != hash(st))
        report.changed = len(todo)
        self._forgotten.difference_update(statuses)
        for start in range(0, len(todo), self.read_batch):
            part = todo[start : start + self.read_batch]
            try:
                self._sync_part(part, statuses, live_ids, report)
            except ReconcilerError as exc:
                report.failed += len(todo) - start
                report.error = str(exc)
                logger.warning("write-back stopped, left for the next run: {}", exc)
                break
        if report.changed:
            logger.info("{}", report.summary())
        return report

    def _sync_part(
        self,
        part: Sequence[str],
        statuses: Mapping[str, Status],
        live_ids: Container[str],
        report: SyncReport,
    ) -> None:
        back = self.store.read(part)
        have = back.refs
        report.read += len(part)
        report.calls += back.calls
        edits = Edits()
        edited: set[str] = set()
        for oid in part:
            if oid not in have:  # not in OpenCTI (any more): nothing to show it on
                self._shown[oid] = hash(statuses[oid])
                continue
            want = self.style.render(oid, statuses[oid])
            mine = diff(oid, want, have[oid], live_ids)
            if len(mine):
                edited.add(oid)
                edits.extend(mine)
        outcome = self.store.write(edits) if len(edits) else StoreOutcome()
        report.edits += len(edits)
        report.calls += outcome.calls
        report.failed += len(outcome.failed)
        for oid in part:
            if oid in have and oid not in outcome.failed:
                self._shown[oid] = hash(statuses[oid])
        if edited:
            self._note_moves(sorted(edited), back.stamps, report)
        for oid, why in list(outcome.failed.items())[:3]:
            logger.warning("write-back to OpenCTI indicator {} failed: {}", oid, why)

    def _note_moves(
        self, edited: Sequence[str], before: Mapping[str, str], report: SyncReport
    ) -> None:
        """Remember the ``updated_at`` our edits left on ``edited`` (see ``restamp``)."""
        after, calls = self.store.stamps(edited)
        report.calls += calls
        for oid in edited:
            old, new = before.get(oid), after.get(oid)
            if old is not None and new is not None and new != old:
                self._moved[oid] = (self.restamp(oid, old), new)
