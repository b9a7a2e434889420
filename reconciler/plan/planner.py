"""The planner: ``build_plan`` diffs the desired indicators against the owned Defender ones.

``build_plan`` is a short coordinator over one function per phase, run in this order: the
keys held by other applications, the quota cut, the diff of desired vs owned, the owned keys
no longer desired, the mapping's skips, then the withholding of destructive changes after an
incomplete read. The change records come from ``changes``, the guards from ``guards``, the
fingerprints from ``fingerprint``. Pure: no clock, no I/O, no printing.

Change kinds, decided per key (indicatorType, indicatorValue):

- ``create``  desired, no owned copy in Defender;
- ``update``  an owned copy with the same action differs in a managed field;
- ``replace`` no owned copy with the desired action (a changed action is written as a new
  indicator, then the old one deleted; ``apply`` never deletes an id the import answered with,
  so this is also right when Defender upserts on type + value and updates the row in place);
- ``expire``  owned, not desired, its OpenCTI indicator revoked or past its expiry;
- ``delete``  owned, not desired (removed, or left the stream's filters), a duplicate owned
  copy of a key, a desired key cut by the quota, a key the mapping policy withdrew (reason
  ``excluded``, ``opted_out`` or ``not_deployed_by_rule``), or an owned row of an indicator type
  this code does not know (it can match no desired key);
- ``skip``    desired but not deployable (mapping's reason, over the quota, or another
  application already holds the same type and value).

Another application's indicator with a desired key's type and value (canonical, compared
case-insensitively) is never overwritten: if Defender upserts on (type, value), importing that
key would rewrite the other indicator whatever its action (see ``foreign``). The key is skipped
(``held_by_other_application``), takes no quota room, and an owned copy of it is deleted: the
value is already managed by that application.

Actions are compared through ``model.canonical_action``: a legacy alias Defender answers with
(``Alert`` for ``Audit``...) is the same action, never a change.

Quota: ``free = quota - non_owned`` (never below 0). When more keys are desired than fit, they
are ranked by score (high first), then ``updated_at`` (newest first, unknown last), then key,
and the first ``free`` kept. Already being deployed earns no preference: a higher-scored new
indicator displaces a lower-scored deployed one (whose owned copy is deleted, reason
``quota``), so what Defender holds converges on the best intel rather than on the oldest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from reconciler.model import (
    DefenderIndicator,
    DesiredIndicator,
    IndicatorKey,
    Skipped,
    SkipReason,
    canonical_action,
)
from reconciler.plan.changes import (
    after_body,
    before_body,
    changed_fields,
    close_expiry,
    delete_change,
    not_deployed,
    skip_change,
    strip_ignored,
)
from reconciler.plan.document import Change, ChangeKind, Guard, Plan, Quota, Reason, id_order
from reconciler.plan.fingerprint import desired_line, digest, owned_line
from reconciler.plan.foreign import ForeignIdentity, foreign_identity
from reconciler.plan.guards import delete_guards, incomplete_read_guard
from reconciler.plan.policy import PlanPolicy

__all__ = ["build_plan"]

#: One owned indicator and its essence (computed once per indicator).
_Copy = tuple[DefenderIndicator, dict[str, Any]]

#: ``PlanPolicy`` is frozen, so one shared default is safe.
_DEFAULT_POLICY = PlanPolicy()

_HELD_DELETE_DETAIL = "another application's indicator holds the same type and value"

#: Withdrawal reasons whose owned copies are ``expire`` changes (the rest are ``delete``).
_GONE = frozenset({SkipReason.REVOKED, SkipReason.EXPIRED})


class _Diff(NamedTuple):
    """What the diff of desired vs owned found."""

    changes: list[Change]
    unchanged: int
    #: One fingerprint line per desired key (held keys aside), from the essence just computed.
    desired_lines: list[str]


def build_plan(
    desired: Mapping[IndicatorKey, DesiredIndicator] | Iterable[DesiredIndicator],
    actual_owned: Iterable[DefenderIndicator],
    *,
    skipped: Iterable[Skipped] = (),
    expired_keys: Mapping[IndicatorKey, Skipped] | None = None,
    non_owned_count: int = 0,
    held_by_others: Mapping[ForeignIdentity, str] | None = None,
    policy: PlanPolicy = _DEFAULT_POLICY,
    complete: bool = True,
    scoped: bool = False,
    not_read: int = 0,
) -> Plan:
    """Diff ``desired`` against the owned Defender indicators; pure and deterministic.

    ``expired_keys`` maps withdrawn keys to their ``Skipped``; an owned copy of such a key (not
    otherwise desired) becomes ``expire`` (revoked/expired in OpenCTI) or ``delete`` (withdrawn
    by the mapping policy), with the skip's reason, detail and rule. ``complete=False``
    (either listing failed or was truncated) keeps every destructive change out.

    ``scoped=True``: both sides hold only some keys (a stream event's), so the guards about
    the whole set, ``empty_desired`` and ``max_delete_ratio``, are not evaluated (an empty
    desired side is what a deleted indicator looks like); ``max_deletes`` still is. The
    caller passes the owned indicators outside the scope in ``non_owned_count`` so the quota
    stays right.

    ``not_read``: matching OpenCTI indicators a bounded read left below the cut (reported in
    ``Quota``).

    ``held_by_others`` maps ``foreign_identity`` of every non-owned indicator to a short
    description of it (its ``application`` and action); desired keys matching one are
    skipped, never imported.
    """
    want: dict[IndicatorKey, DesiredIndicator] = (
        dict(desired) if isinstance(desired, Mapping) else {d.key: d for d in desired}
    )
    owned = list(actual_owned)
    expired = dict(expired_keys or {})
    want, held, held_skips = _split_held(want, held_by_others)
    free = max(0, policy.quota - non_owned_count)
    over, quota_skips = _cut_to_quota(want, free)
    owned_ess, by_key = _index_owned(owned)
    diff = _diff_desired(
        want, over, by_key, frozenset(policy.ignore_fields), policy.expiry_tolerance_seconds
    )
    retired, expire_done = _retire_owned(by_key, want, over, held, expired)
    changes = [
        *held_skips,
        *quota_skips,
        *diff.changes,
        *retired,
        *_mapping_skips(skipped, expire_done),
    ]

    guards: list[Guard] = []
    if not complete:
        changes, withheld = _withhold_destructive(changes)
        guards.append(incomplete_read_guard(withheld))
    changes.sort(key=Change.sort_key)
    deletes = sum(1 for c in changes if c.kind in (ChangeKind.DELETE, ChangeKind.EXPIRE))
    creates = sum(1 for c in changes if c.kind is ChangeKind.CREATE)
    guards.extend(delete_guards(len(want) + len(held), len(owned), deletes, policy, scoped=scoped))
    owned_after = len(owned) + creates - deletes
    return Plan(
        changes=tuple(changes),
        unchanged=diff.unchanged,
        guards=tuple(guards),
        quota=Quota(
            limit=policy.quota,
            non_owned=non_owned_count,
            free=free,
            desired=len(want),
            planned_owned_after=owned_after,
            used_after=non_owned_count + owned_after,
            not_read=not_read,
        ),
        complete=complete,
        owned_count=len(owned),
        fingerprint=digest(owned_line(i, e) for i, e in owned_ess),
        desired_fingerprint=digest(diff.desired_lines),
    )


# -- phase 1: keys another application holds ----------------------------------------------


def _split_held(
    want: dict[IndicatorKey, DesiredIndicator],
    held_by_others: Mapping[ForeignIdentity, str] | None,
) -> tuple[
    dict[IndicatorKey, DesiredIndicator], dict[IndicatorKey, DesiredIndicator], list[Change]
]:
    """Split ``want`` into the keys we may write and those another application holds (never
    written, no quota room), with a skip for each held one."""
    if not held_by_others:
        return want, {}, []
    kept: dict[IndicatorKey, DesiredIndicator] = {}
    held: dict[IndicatorKey, DesiredIndicator] = {}
    skips: list[Change] = []
    for key, d in want.items():
        ident = foreign_identity(key.type.value, key.value)
        holder = held_by_others.get(ident) if ident is not None else None
        if holder is None:
            kept[key] = d
            continue
        held[key] = d
        note = f"application {holder} holds the same type and value"
        skips.append(not_deployed(d, Reason.HELD_BY_OTHER_APPLICATION, note))
    return kept, held, skips


# -- phase 2: the quota cut ---------------------------------------------------------------


def _cut_to_quota(
    want: Mapping[IndicatorKey, DesiredIndicator], free: int
) -> tuple[set[IndicatorKey], list[Change]]:
    """The lowest-ranked desired keys beyond the ``free`` room, and a skip for each."""
    if len(want) <= free:
        return set(), []
    cut = sorted(want.values(), key=_rank)[free:]
    skips = [
        not_deployed(d, Reason.QUOTA, f"over the free room of {free} (score {d.score})")
        for d in cut
    ]
    return {d.key for d in cut}, skips


def _rank(d: DesiredIndicator) -> tuple[Any, ...]:
    updated = d.updated_at
    # Newest first, unknown last: negate the timestamp; None sorts after every real one.
    return (
        -d.score,
        0 if updated is not None else 1,
        -updated.timestamp() if isinstance(updated, datetime) else 0.0,
        d.key.type.value,
        d.key.value,
    )


# -- phase 3: desired vs owned ------------------------------------------------------------


def _index_owned(
    owned: Iterable[DefenderIndicator],
) -> tuple[list[_Copy], dict[IndicatorKey | None, list[_Copy]]]:
    """Every owned indicator with its essence, and the same grouped by key (listing order;
    ``None`` groups the rows of an indicator type this code does not know)."""
    # Each essence is computed once: it is the bulk of the cost of a 15,000-indicator no-op.
    owned_ess = [(ind, ind.essence()) for ind in owned]
    by_key: dict[IndicatorKey | None, list[_Copy]] = {}
    for copy in owned_ess:
        by_key.setdefault(copy[0].key, []).append(copy)
    return owned_ess, by_key


def _diff_desired(
    want: Mapping[IndicatorKey, DesiredIndicator],
    over: set[IndicatorKey],
    by_key: Mapping[IndicatorKey | None, list[_Copy]],
    ignore: frozenset[str],
    tolerance: float = 0.0,
) -> _Diff:
    """Create, update or replace each desired key within the quota; delete its duplicate
    owned copies; count the keys already right."""
    changes: list[Change] = []
    lines: list[str] = []
    unchanged = 0
    for key, d in want.items():
        new = d.essence()
        lines.append(desired_line(d, new))
        if key in over:
            continue
        copies = by_key.get(key)
        if not copies:
            changes.append(not_deployed(d, Reason.NOT_IN_DEFENDER, kind=ChangeKind.CREATE))
            continue
        action = canonical_action(key.type.value, new["action"])
        same = [c for c in copies if canonical_action(key.type.value, c[1]["action"]) == action]
        # Of the copies with the desired action, one spelt exactly as we send it first.
        exact = [c for c in same if c[1]["action"] == new["action"]]
        kept, old = min(exact or same or copies, key=_copy_order)
        if len(copies) > 1:
            changes.extend(
                delete_change(other, ess, Reason.DUPLICATE.value, d.opencti_ids)
                for other, ess in copies
                if other is not kept
            )
        fix = _correction(
            key, d, new, kept, old, ignore, same_action=bool(same), tolerance=tolerance
        )
        if fix is None:
            unchanged += 1
        else:
            changes.append(fix)
    return _Diff(changes, unchanged, lines)


def _copy_order(copy: _Copy) -> tuple[int, int, str]:
    """The owned copy kept for a key is the lowest id (of those with the desired action)."""
    return id_order(copy[0].id)


def _correction(
    key: IndicatorKey,
    d: DesiredIndicator,
    new: dict[str, Any],
    kept: DefenderIndicator,
    old: dict[str, Any],
    ignore: frozenset[str],
    *,
    same_action: bool,
    tolerance: float = 0.0,
) -> Change | None:
    """The update (same action) or replace (no copy with the desired action) of the kept
    owned copy; ``None`` when its managed fields already equal ``d``'s, ignored ones aside,
    and the expiry within ``tolerance`` seconds of the desired one (see ``PlanPolicy``)."""
    old_cmp, new_cmp = strip_ignored(old, ignore), strip_ignored(new, ignore)
    if tolerance and close_expiry(old_cmp, new_cmp, tolerance):
        old_cmp = {**old_cmp, "expirationTime": new_cmp["expirationTime"]}
    if same_action and old_cmp["action"] != new_cmp["action"]:
        old_cmp = {**old_cmp, "action": new_cmp["action"]}  # an alias of the same action
    if not same_action:
        kind, reason = ChangeKind.REPLACE, Reason.ACTION_CHANGED
    elif old_cmp == new_cmp:
        return None
    else:
        kind, reason = ChangeKind.UPDATE, Reason.FIELDS_CHANGED
    before = before_body(kept, old)
    after = after_body(d, before, ignore)
    if same_action:
        # Keep the spelling Defender holds (an alias of ours): an import with another action
        # name could create a second indicator instead of updating this one.
        after["action"] = old["action"]
    return Change(
        kind,
        key,
        defender_id=kept.id,
        opencti_ids=d.opencti_ids,
        before=before,
        after=after,
        fields=changed_fields(old_cmp, new_cmp),
        reason=reason.value,
        detail=d.note,
        rule=d.rule,
    )


# -- phase 4: owned but not desired -------------------------------------------------------


def _retire_owned(
    by_key: Mapping[IndicatorKey | None, list[_Copy]],
    want: Mapping[IndicatorKey, DesiredIndicator],
    over: set[IndicatorKey],
    held: Mapping[IndicatorKey, DesiredIndicator],
    expired: Mapping[IndicatorKey, Skipped],
) -> tuple[list[Change], set[tuple[IndicatorKey, str]]]:
    """Remove every owned copy of a key not (or no longer) deployed: cut by the quota, held
    by another application, expired, or simply not desired. Also returns the (key, OpenCTI
    id) pairs shown as expires, so their mapping skips are not listed twice."""
    changes: list[Change] = []
    expire_done: set[tuple[IndicatorKey, str]] = set()
    for key, copies in by_key.items():
        if key is not None and key in want and key not in over:
            continue
        if key is None:
            reason = Reason.NOT_IN_OPENCTI.value
            changes.extend(
                delete_change(i, e, reason, (), detail=f"unknown indicator type {i.type_name!r}")
                for i, e in copies
            )
        elif key in over:
            ids = want[key].opencti_ids
            changes.extend(delete_change(i, e, Reason.QUOTA.value, ids) for i, e in copies)
        elif key in held:
            ids = held[key].opencti_ids
            reason = Reason.HELD_BY_OTHER_APPLICATION.value
            changes.extend(
                delete_change(i, e, reason, ids, detail=_HELD_DELETE_DETAIL) for i, e in copies
            )
        elif key in expired:
            why = expired[key]
            expire_done.add((key, why.opencti_id))
            # Revoked or expired in OpenCTI: an expire; withdrawn by the policy: a delete.
            kind = ChangeKind.EXPIRE if why.reason in _GONE else ChangeKind.DELETE
            changes.extend(
                delete_change(
                    i,
                    e,
                    why.reason.value,
                    (why.opencti_id,),
                    kind=kind,
                    detail=why.detail,
                    rule=why.rule or "",
                )
                for i, e in copies
            )
        else:
            reason = Reason.NOT_IN_OPENCTI.value
            changes.extend(delete_change(i, e, reason, ()) for i, e in copies)
    return changes, expire_done


# -- phase 5: the mapping's skips ---------------------------------------------------------


def _mapping_skips(
    skipped: Iterable[Skipped], expire_done: set[tuple[IndicatorKey, str]]
) -> list[Change]:
    """A skip per OpenCTI indicator the mapping did not deploy, except those already shown
    as an expire change (listing them again as a skip would double count)."""
    return [
        skip_change(s) for s in skipped if s.key is None or (s.key, s.opencti_id) not in expire_done
    ]


# -- phase 6: an incomplete read ----------------------------------------------------------


def _withhold_destructive(changes: list[Change]) -> tuple[list[Change], int]:
    """The changes without the destructive ones, and how many were withheld."""
    kept = [c for c in changes if not c.kind.destructive]
    return kept, len(changes) - len(kept)
