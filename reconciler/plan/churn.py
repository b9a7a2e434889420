"""The churn guard: a key planned with the very same change run after run is held back.

When Defender does not keep what it was sent (it normalises a field we cannot predict, drops
an indicator it will not act on, or another process reverts it), every full run plans the same
write again and the reconciler would rewrite that key forever. ``hold_churning`` compares each
key's changes with those of the previous full runs: when the same changes (same kinds, same
``before``, same ``after``) were planned in ``runs`` consecutive full runs, they are replaced by
one ``skip`` with reason ``unconverged``, so the key is reported (plan, log, metric) instead of
rewritten. Anything that changes the signature (an OpenCTI edit, a new state in Defender)
starts the count again; a key that needs no change is forgotten.

Pure: no I/O, no clock; the caller keeps the ``ChurnState`` between runs (in memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from reconciler.plan.document import Change, ChangeKind, Plan, Reason

__all__ = ["ChurnState", "hold_churning"]

#: A key's identity for the guard: its Defender key, or the id of an owned row without one.
_Who = tuple[str, str]


@dataclass(frozen=True)
class ChurnState:
    """Per key: the signature of its changes in the last full run, and in how many
    consecutive full runs that same signature was planned."""

    seen: Mapping[_Who, tuple[str, int]] = field(default_factory=dict)
    #: Keys held back by the last run (the ``reconciler_unconverged_keys`` gauge).
    held: int = 0


def _who(change: Change) -> _Who:
    if change.key is not None:
        return (change.key.type.value, change.key.value)
    return ("id", change.defender_id or "")


def _signature(changes: list[Change]) -> str:
    h = hashlib.sha256()
    for c in sorted(changes, key=Change.sort_key):
        h.update(repr((c.kind.value, c.defender_id, c.before, c.after)).encode())
    return h.hexdigest()


def _counted(change: Change, deletes_blocked: bool) -> bool:
    """Changes apply will execute: skips never, deletes only when no guard holds them."""
    if change.kind is ChangeKind.SKIP:
        return False
    return not (deletes_blocked and change.kind in (ChangeKind.DELETE, ChangeKind.EXPIRE))


def hold_churning(plan: Plan, previous: ChurnState, runs: int) -> tuple[Plan, ChurnState]:
    """The plan with the changes of churning keys held back, and the state for the next run.
    ``runs`` = 0 turns the guard off (the state is kept empty)."""
    if runs <= 0:
        return plan, ChurnState()
    by_key: dict[_Who, list[Change]] = {}
    for change in plan.changes:
        if _counted(change, plan.deletes_blocked):
            by_key.setdefault(_who(change), []).append(change)
    seen: dict[_Who, tuple[str, int]] = {}
    held: dict[_Who, int] = {}
    for who, changes in by_key.items():
        sig = _signature(changes)
        last = previous.seen.get(who)
        count = last[1] + 1 if last is not None and last[0] == sig else 1
        seen[who] = (sig, count)
        if count >= runs:
            held[who] = count
    if not held:
        return plan, ChurnState(seen)
    kept: list[Change] = []
    for change in plan.changes:
        who = _who(change)
        if who not in held or not _counted(change, plan.deletes_blocked):
            kept.append(change)
            continue
        if change is by_key[who][0]:
            kept.append(_held_back(by_key[who], held[who]))
    kept.sort(key=Change.sort_key)
    return replace(plan, changes=tuple(kept)), ChurnState(seen, len(held))


def _held_back(changes: list[Change], count: int) -> Change:
    first = changes[0]
    kinds = ", ".join(sorted({c.kind.value for c in changes}))
    return Change(
        ChangeKind.SKIP,
        first.key,
        defender_id=first.defender_id,
        opencti_ids=first.opencti_ids,
        before=first.before,
        after=first.after,
        reason=Reason.UNCONVERGED.value,
        detail=(
            f"the same {kinds} was planned in {count} consecutive full runs and Defender did "
            "not keep it; held back until OpenCTI or Defender changes"
        ),
    )
