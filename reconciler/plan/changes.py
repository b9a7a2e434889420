"""Building one ``Change`` record: its ``before`` and ``after`` bodies, the managed fields that
differ, and the change records the planner's phases emit (not deployed, delete, skip).

The planner decides which change a key gets; this module only fills the record in. It must
not look at more than the one indicator (and its owned copy) it is handed, and does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from deepdiff import DeepDiff

from reconciler.model import (
    MANAGED_FIELDS,
    DefenderIndicator,
    DesiredIndicator,
    RawIndicator,
    Skipped,
)
from reconciler.plan.document import Change, ChangeKind, Reason

__all__ = [
    "after_body",
    "before_body",
    "changed_fields",
    "close_expiry",
    "delete_change",
    "not_deployed",
    "skip_change",
    "strip_ignored",
]


def before_body(ind: DefenderIndicator, essence: Mapping[str, Any]) -> RawIndicator:
    """An owned indicator's key, application and managed fields (``essence`` is its own)."""
    body: RawIndicator = {
        "indicatorType": ind.type_name,
        "indicatorValue": ind.indicator_value,
        "application": ind.application,
    }
    body.update(essence)
    return body


def after_body(
    desired: DesiredIndicator, owned_before: Mapping[str, Any] | None, ignore: frozenset[str]
) -> RawIndicator:
    """The body to send. Ignored fields keep the owned indicator's value (Terraform's
    ``ignore_changes``): otherwise an update triggered by another field would overwrite them.
    An ignored field the owned copy does not hold keeps the desired value."""
    body = desired.to_body()
    if owned_before is None:
        return body
    # MANAGED_FIELDS order, not the set's: the body's key order shows in the JSON report.
    for name in (f for f in MANAGED_FIELDS if f in ignore):
        value = owned_before.get(name)
        if value is not None:
            body[name] = value
    return body


def strip_ignored(essence: dict[str, Any], ignore: frozenset[str]) -> dict[str, Any]:
    """``essence`` without the ignored fields (the same dict when nothing is ignored)."""
    if not ignore:
        return essence
    return {k: v for k, v in essence.items() if k not in ignore}


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    """Managed field names that differ, in ``MANAGED_FIELDS`` order (deepdiff, only called
    once a plain ``==`` said the essences differ: it is far slower than equality)."""
    roots = {str(k) for k in DeepDiff(old, new).affected_root_keys}
    return tuple(f for f in MANAGED_FIELDS if f in roots)


def close_expiry(old: Mapping[str, Any], new: Mapping[str, Any], seconds: float) -> bool:
    """Both essences hold an expiry, different but at most ``seconds`` apart (wire forms)."""
    a, b = old.get("expirationTime"), new.get("expirationTime")
    if not isinstance(a, str) or not isinstance(b, str) or a == b:
        return False
    try:
        gap = abs((datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds())
    except (ValueError, TypeError):  # unreadable, or one naive and one aware: not close
        return False
    return gap <= seconds


def not_deployed(
    d: DesiredIndicator,
    reason: Reason,
    detail: str = "",
    *,
    kind: ChangeKind = ChangeKind.SKIP,
) -> Change:
    """A desired key with no owned copy: created, or skipped for ``reason`` (``detail``, else
    the spec's own note, says more)."""
    return Change(
        kind,
        d.key,
        opencti_ids=d.opencti_ids,
        after=d.to_body(),
        reason=reason.value,
        detail=detail or d.note,
        rule=d.rule,
    )


def delete_change(
    ind: DefenderIndicator,
    essence: Mapping[str, Any],
    reason: str,
    opencti_ids: tuple[str, ...],
    *,
    kind: ChangeKind = ChangeKind.DELETE,
    detail: str = "",
    rule: str = "",
) -> Change:
    """Remove the owned indicator ``ind`` (a delete, or an expire with ``kind``)."""
    return Change(
        kind,
        ind.key,
        defender_id=ind.id,
        opencti_ids=opencti_ids,
        before=before_body(ind, essence),
        reason=reason,
        detail=detail,
        rule=rule,
    )


def skip_change(s: Skipped) -> Change:
    """The record of an OpenCTI indicator the mapping did not deploy."""
    return Change(
        ChangeKind.SKIP,
        s.key,
        opencti_ids=(s.opencti_id,),
        reason=s.reason.value,
        detail=_skip_detail(s),
        rule=s.rule or "",
    )


def _skip_detail(s: Skipped) -> str:
    if s.name and s.detail:
        return f"{s.name}: {s.detail}"
    return s.detail or (s.name or "")
