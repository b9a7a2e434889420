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
from reconciler.writeback.references import (
    Attached,
    Edits,
    Reference,
    ReferenceStyle,
    Restamps,
    diff,
    with_marker,
)
from reconciler.writeback.status import Status

__all__ = ["Readback", "ReferenceStore", "StoreOutcome", "SyncReport", "WriteBack"]


@dataclass
class StoreOutcome:
    """What a ``ReferenceStore.write`` did: failures by indicator id, and its OpenCTI calls."""

    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    #: Reference ids attached, per indicator, in the order of ``Edits.attach``.
    attached: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Readback:
    """Our references on each indicator read (an id OpenCTI does not know is absent), each
    indicator's ``updated_at`` as read, and the calls it took."""

    refs: dict[str, list[Attached]] = field(default_factory=dict)
    stamps: dict[str, str] = field(default_factory=dict)
    #: ``updated_at`` with the write-back's own moves undone (``restamp_row``), where it differs.
    bases: dict[str, str] = field(default_factory=dict)
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

    def __init__(
        self,
        store: ReferenceStore,
        style: ReferenceStyle,
        *,
        read_batch: int = 500,
        restamps: Restamps | None = None,
        enabled: bool = True,
    ):
        """``enabled`` False: only ``recall`` is used (the write-back is off here, but another
        process's marks must still be honoured)."""
        self.store = store
        self.style = style
        self.read_batch = read_batch
        self.restamps = restamps if restamps is not None else Restamps()
        self.enabled = enabled
        #: Per OpenCTI id: hash of the status its references show.
        self._shown: dict[str, int] = {}
        #: Ids whose references changed in OpenCTI since (stream): to be read again.
        self._forgotten: set[str] = set()

    def recall(self, opencti_ids: Sequence[str]) -> int:
        """Read the marks on these indicators' references (any tenant's) and learn the moves
        still in force; the number of new ones. For indicators whose expiry alone seems to
        have moved: a move our edit made is no reason to rewrite Defender."""
        learned = 0
        wanted = sorted(set(opencti_ids))
        for start in range(0, len(wanted), self.read_batch):
            back = self.store.read(wanted[start : start + self.read_batch])
            for oid, base in back.bases.items():
                ours = back.stamps.get(oid)
                if ours is not None and self.restamps.learn(oid, ours, base):
                    learned += 1
        if learned:
            logger.info("{} indicators' updated_at was moved by a write-back edit", learned)
        return learned

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
        wants: dict[str, tuple[Reference, ...]] = {}
        for oid in part:
            if oid not in have:  # not in OpenCTI (any more): nothing to show it on
                self._shown[oid] = hash(statuses[oid])
                continue
            wants[oid] = self.style.render(oid, statuses[oid])
            edits.extend(diff(oid, wants[oid], have[oid], live_ids))
        outcome = self.store.write(edits) if len(edits) else StoreOutcome()
        report.edits += len(edits)
        report.calls += outcome.calls
        for oid in part:
            if oid in have and oid not in outcome.failed:
                self._shown[oid] = hash(statuses[oid])
        touched = {e[0] for e in edits.attach} | {e[0] for e in edits.patch}
        touched |= {e[0] for e in edits.detach}
        edited = sorted(oid for oid in touched if oid not in outcome.failed)
        if edited:
            self._mark_moves(edited, back, wants, edits, outcome, report)
        report.failed += len(outcome.failed)
        for oid, why in list(outcome.failed.items())[:3]:
            logger.warning("write-back to OpenCTI indicator {} failed: {}", oid, why)

    def _mark_moves(
        self,
        edited: Sequence[str],
        back: Readback,
        wants: Mapping[str, tuple[Reference, ...]],
        edits: Edits,
        outcome: StoreOutcome,
        report: SyncReport,
    ) -> None:
        """Where our edits moved an indicator's ``updated_at`` (a platform may do so on a
        reference edit), mark one of our references with the value they left and the value
        before any edit of ours, so every later read undoes the move (``restamp_row``): the
        expiry, computed from ``updated_at``, never moves because of the write-back. The mark
        lives in OpenCTI, so it holds across restarts, replicas and one-shot runs."""
        after, calls = self.store.stamps(edited)
        report.calls += calls
        detached = {(oid, ref) for oid, ref, _ in edits.detach}
        first_new: dict[str, str] = {}
        for oid, ref in edits.attach:
            first_new.setdefault(oid, ref.external_id)
        marks = Edits()
        for oid in edited:
            old, new = back.stamps.get(oid), after.get(oid)
            if old is None or new is None or new == old:
                continue
            base = back.bases.get(oid, old)  # ``old`` may itself be a write-back edit's
            target = _still_attached(oid, back.refs.get(oid, ()), detached, first_new, outcome)
            by_id = {r.external_id: r for r in wants.get(oid, ())}
            if target is None or target[1] not in by_id:
                continue
            want = by_id[target[1]]
            marked = Reference(want.external_id, want.url, with_marker(want.description, base, new))
            marks.patch.append((oid, target[0], marked))
            self.restamps.learn(oid, new, base)
        if len(marks):
            done = self.store.write(marks)
            report.calls += done.calls
            report.edits += len(marks)
            for oid, why in done.failed.items():
                outcome.failed.setdefault(oid, why)
                self._shown.pop(oid, None)


def _still_attached(
    oid: str,
    had: Sequence[Attached],
    detached: set[tuple[str, str]],
    first_new: Mapping[str, str],
    outcome: StoreOutcome,
) -> tuple[str, str] | None:
    """(reference id, external id) of one of our references on ``oid`` after the write."""
    for ref in had:
        if (oid, ref.id) not in detached and ref.external_id:
            return ref.id, ref.external_id
    ids = outcome.attached.get(oid, [])
    if oid in first_new and ids:
        return ids[0], first_new[oid]
    return None
