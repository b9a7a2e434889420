"""Execute a ``Plan`` against Defender with the fewest calls, in a safe order.

Order, so quota is freed before it is needed and a replacement never leaves a key uncovered:

1. deletes and expires (unless a guard blocks them) through ``BatchDelete`` (≤ 500 ids a call);
2. creates, updates and the new half of replacements through ``/import`` (≤ 500 a call);
3. after each import batch, the old ids of the replacements whose new indicator was accepted.

Invariant: a key is never uncovered, whatever Defender's upsert key is. The old id of a
replacement is deleted only when the import answered with *another* id for the new indicator;
an id any import of this apply answered with is never deleted (if Defender upserts on type +
value, the import updated the old row in place and answered with its id: deleting it would
remove the indicator just written). An import that answers no id deletes nothing: the next run
sees both rows and removes the duplicate.

Every step is idempotent (import upserts; deleting an id that is already gone counts as
success), so applying a plan twice, or re-running after a crash, is harmless and converges.
Per-item failures are recorded and never abort the rest; only an authentication failure stops the
run (every further call would fail the same way).

This module owns execution only: it does not plan, render, list or read the clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from reconciler.errors import AuthError, DefenderError
from reconciler.model import RawIndicator
from reconciler.plan import Change, ChangeKind, Plan

__all__ = ["ApplyResult", "DefenderWriter", "ItemFailure", "apply_plan"]

BATCH = 500


class _ImportResult(Protocol):
    @property
    def id(self) -> str | None: ...
    @property
    def ok(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...


class _DeleteResult(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...


class DefenderWriter(Protocol):
    """The two write calls apply needs (``DefenderClient`` satisfies it)."""

    def import_indicators(self, bodies: Sequence[RawIndicator]) -> Sequence[_ImportResult]: ...

    def batch_delete(self, ids: Sequence[str]) -> Sequence[_DeleteResult]: ...


@dataclass(frozen=True)
class ItemFailure:
    """One change that could not be applied, and why (Defender's reason, cut short)."""

    change: Change
    step: str  # "import" | "delete" | "replace-delete"
    reason: str


@dataclass
class ApplyResult:
    """What an apply did: counts by change kind, failures, and what guards held back."""

    applied: Counter[str] = field(default_factory=Counter)
    failures: list[ItemFailure] = field(default_factory=list)
    blocked_deletes: int = 0
    dry_run: bool = False
    aborted: str | None = None
    #: Each accepted create, update or replacement and the Defender id now holding it (the
    #: import's answer, else the id it had; ``None`` when neither is known).
    written: list[tuple[Change, str | None]] = field(default_factory=list)
    #: Defender ids removed (deletes, expires and the old halves of replacements).
    removed: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.failures and self.aborted is None

    def summary(self) -> str:
        labels = (
            ("create", "created"),
            ("update", "updated"),
            ("replace", "replaced"),
            ("delete", "deleted"),
            ("expire", "expired"),
        )
        verb = "Would apply" if self.dry_run else "Applied"
        parts = [f"{self.applied.get(kind, 0)} {label}" for kind, label in labels]
        text = f"{verb}: " + ", ".join(parts) + f"; {len(self.failures)} failed"
        if self.blocked_deletes:
            text += f"; {self.blocked_deletes} deletes held back by a guard"
        if self.aborted:
            text += f"; aborted: {self.aborted}"
        return text


def _chunks(items: Sequence[Change], size: int) -> list[Sequence[Change]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def apply_plan(
    plan: Plan,
    writer: DefenderWriter,
    *,
    allow_mass_delete: bool = False,
    dry_run: bool = False,
    batch_size: int = BATCH,
    on_batch: Callable[[str, int], None] | None = None,
    before_write: Callable[[str], None] | None = None,
) -> ApplyResult:
    """Apply ``plan`` through ``writer``; returns what happened (never raises on item errors).

    ``allow_mass_delete`` overrides the plan's delete guards. ``dry_run`` counts what would be
    done and writes nothing. ``on_batch(step, n)`` is called after each write call (progress);
    ``before_write(step)`` before each one (a guard: what it raises stops the apply there, with
    nothing more sent).
    """
    result = ApplyResult(dry_run=dry_run)
    deletes = [c for c in plan.changes if c.kind in (ChangeKind.DELETE, ChangeKind.EXPIRE)]
    writes = [
        c
        for c in plan.changes
        if c.kind in (ChangeKind.CREATE, ChangeKind.UPDATE, ChangeKind.REPLACE)
    ]
    blocked = plan.deletes_blocked and not allow_mass_delete
    if blocked and deletes:
        result.blocked_deletes = len(deletes)
        logger.warning(
            "guard blocked {} deletes; pass --allow-mass-delete to apply them", len(deletes)
        )
        deletes = []

    if dry_run:
        for c in deletes + writes:
            result.applied[c.kind.value] += 1
        return result

    try:
        writer = _Guarded(writer, before_write) if before_write is not None else writer
        _delete(deletes, writer, result, batch_size, on_batch)
        _write(writes, writer, result, batch_size, on_batch)
    except AuthError as exc:
        result.aborted = str(exc)
        logger.error("apply aborted: {}", exc)
    return result


class _Guarded:
    """A writer that asks ``before_write(step)`` before each call."""

    def __init__(self, writer: DefenderWriter, before_write: Callable[[str], None]) -> None:
        self._writer = writer
        self._before = before_write

    def import_indicators(self, bodies: Sequence[RawIndicator]) -> Sequence[_ImportResult]:
        self._before("import")
        return self._writer.import_indicators(bodies)

    def batch_delete(self, ids: Sequence[str]) -> Sequence[_DeleteResult]:
        self._before("delete")
        return self._writer.batch_delete(ids)


def _delete(
    changes: Sequence[Change],
    writer: DefenderWriter,
    result: ApplyResult,
    batch_size: int,
    on_batch: Callable[[str, int], None] | None,
    *,
    step: str = "delete",
    count_as: str | None = None,
) -> None:
    for chunk in _chunks(changes, batch_size):
        ids = [c.defender_id for c in chunk if c.defender_id]
        by_id = {c.defender_id: c for c in chunk if c.defender_id}
        try:
            outcomes = writer.batch_delete(ids)
        except AuthError:
            raise
        except DefenderError as exc:
            for c in chunk:
                result.failures.append(ItemFailure(c, step, str(exc)))
            continue
        finally:
            if on_batch:
                on_batch(step, len(ids))
        for out in outcomes:
            change = by_id.get(out.id)
            if change is None:
                continue
            if out.ok:
                result.applied[count_as or change.kind.value] += 1
                result.removed.add(out.id)
            else:
                result.failures.append(ItemFailure(change, step, out.reason or "delete failed"))


def _write(
    changes: Sequence[Change],
    writer: DefenderWriter,
    result: ApplyResult,
    batch_size: int,
    on_batch: Callable[[str, int], None] | None,
) -> None:
    answered: set[str] = set()  # every id an import of this apply answered with
    for chunk in _chunks(changes, batch_size):
        sent = [c for c in chunk if c.after is not None]
        try:
            outcomes = writer.import_indicators([c.after for c in sent if c.after is not None])
        except AuthError:
            raise
        except DefenderError as exc:
            for c in sent:
                result.failures.append(ItemFailure(c, "import", str(exc)))
            continue
        finally:
            if on_batch:
                on_batch("import", len(sent))
        answered.update(out.id for out in outcomes if out.ok and out.id)
        replaced_old = _record_imports(sent, outcomes, result, answered)
        # The new indicator is live: only now remove the old one, so the key stays covered.
        if replaced_old:
            _delete(
                replaced_old,
                writer,
                result,
                batch_size,
                on_batch,
                step="replace-delete",
                count_as=ChangeKind.REPLACE.value,
            )


def _record_imports(
    sent: Sequence[Change],
    outcomes: Sequence[_ImportResult],
    result: ApplyResult,
    answered: set[str],
) -> list[Change]:
    """Count the imports; returns the replacements whose old id may now be deleted."""
    replaced_old: list[Change] = []
    for change, out in zip(sent, outcomes, strict=False):
        if not out.ok:
            result.failures.append(ItemFailure(change, "import", out.reason or "rejected"))
            continue
        result.written.append((change, out.id or change.defender_id))
        if change.kind is not ChangeKind.REPLACE:
            result.applied[change.kind.value] += 1
        elif out.id and change.defender_id not in answered:
            replaced_old.append(change)
        else:
            # Updated in place (Defender answered with the old id), or no id to be sure of.
            result.applied[ChangeKind.REPLACE.value] += 1
            if not out.id:
                logger.warning(
                    "import of {} answered no id; its old indicator {} is kept this run",
                    change.key,
                    change.defender_id,
                )
    for change in sent[len(outcomes) :]:
        result.failures.append(ItemFailure(change, "import", "no result returned"))
    return replaced_old
