"""Execute a ``Plan`` against Defender with the fewest calls, in a safe order.

Order, so quota is freed before it is needed and a replacement never leaves a key uncovered:

1. deletes and expires (unless a guard blocks them) through ``BatchDelete`` (≤ 500 ids a call);
2. creates, updates and the new half of replacements through ``/import`` (≤ 500 a call);
3. after each import batch, the old ids of the replacements whose new indicator was accepted.

Every step is idempotent (import upserts on type + value + action; deleting an id that is
already gone counts as success), so applying a plan twice, or re-running after a crash, is
harmless and converges. Per-item failures are recorded and never abort the rest; only an
authentication failure stops the run (every further call would fail the same way).

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
) -> ApplyResult:
    """Apply ``plan`` through ``writer``; returns what happened (never raises on item errors).

    ``allow_mass_delete`` overrides the plan's delete guards. ``dry_run`` counts what would be
    done and writes nothing. ``on_batch(step, n)`` is called after each write call (progress).
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
        _delete(deletes, writer, result, batch_size, on_batch)
        _write(writes, writer, result, batch_size, on_batch)
    except AuthError as exc:
        result.aborted = str(exc)
        logger.error("apply aborted: {}", exc)
    return result


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
            else:
                result.failures.append(ItemFailure(change, step, out.reason or "delete failed"))


def _write(
    changes: Sequence[Change],
    writer: DefenderWriter,
    result: ApplyResult,
    batch_size: int,
    on_batch: Callable[[str, int], None] | None,
) -> None:
    for chunk in _chunks(changes, batch_size):
        bodies = [c.after for c in chunk if c.after is not None]
        sent = [c for c in chunk if c.after is not None]
        try:
            outcomes = writer.import_indicators(bodies)
        except AuthError:
            raise
        except DefenderError as exc:
            for c in sent:
                result.failures.append(ItemFailure(c, "import", str(exc)))
            continue
        finally:
            if on_batch:
                on_batch("import", len(bodies))
        replaced_old: list[Change] = []
        for change, out in zip(sent, outcomes, strict=False):
            if not out.ok:
                result.failures.append(ItemFailure(change, "import", out.reason or "rejected"))
                continue
            if change.kind is ChangeKind.REPLACE:
                replaced_old.append(change)
            else:
                result.applied[change.kind.value] += 1
        if len(outcomes) < len(sent):
            for change in sent[len(outcomes) :]:
                result.failures.append(ItemFailure(change, "import", "no result returned"))
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
