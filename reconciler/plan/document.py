"""The plan as data: its change kinds and reasons, one ``Change``, the ``Guard`` and ``Quota``
records, the ``Plan`` itself and its versioned JSON form (``to_dict`` / ``from_dict``).

This module only describes and serialises a plan. It decides nothing (which change a key gets
is the planner's job, in ``planner``), reads no clock and does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.model import IndicatorKey, IndicatorType, RawIndicator

__all__ = [
    "FORMAT_VERSION",
    "KIND_ORDER",
    "OVERRIDE_FLAG",
    "Change",
    "ChangeKind",
    "Guard",
    "Plan",
    "Quota",
    "Reason",
    "id_order",
]

#: Bumped when a consumer of ``Plan.to_dict`` / the JSON report must change its parser.
FORMAT_VERSION = "1"

#: The command-line flag that lifts the mass-deletion guards (named in guard messages).
OVERRIDE_FLAG = "--allow-mass-delete"


class ChangeKind(StrEnum):
    """What a change does to Defender (``skip`` does nothing and is listed for the record)."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    EXPIRE = "expire"
    SKIP = "skip"

    @property
    def destructive(self) -> bool:
        """Removes an indicator from Defender (replace deletes the old one)."""
        return self in (ChangeKind.DELETE, ChangeKind.EXPIRE, ChangeKind.REPLACE)


#: Sort order of changes within a plan (and of sections in reports).
KIND_ORDER: tuple[ChangeKind, ...] = (
    ChangeKind.CREATE,
    ChangeKind.UPDATE,
    ChangeKind.REPLACE,
    ChangeKind.EXPIRE,
    ChangeKind.DELETE,
    ChangeKind.SKIP,
)
_ORDER = {a: i for i, a in enumerate(KIND_ORDER)}


class Reason(StrEnum):
    """Stable reason strings of changes (never renamed once released). Skips reuse every
    ``SkipReason`` value as is (``unsupported_type``, ``invalid_value``, ``quota`` ...)."""

    NOT_IN_DEFENDER = "not_in_defender"  # create
    FIELDS_CHANGED = "fields_changed"  # update
    ACTION_CHANGED = "action_changed"  # replace
    NOT_IN_OPENCTI = "not_in_opencti"  # delete: no longer desired
    DUPLICATE = "duplicate"  # delete: a second owned copy of one key
    REVOKED = "revoked"  # expire
    EXPIRED = "expired"  # expire
    QUOTA = "quota"  # skip / delete: over the free room
    HELD_BY_OTHER_APPLICATION = "held_by_other_application"  # skip / delete: see ``planner``
    UNCONVERGED = "unconverged"  # skip: the same change planned run after run (see ``churn``)
    EXCLUDED = "excluded"  # skip / delete: the value is in a policy exclusion
    OPTED_OUT = "opted_out"  # skip / delete: the indicator carries the policy's skip label
    NOT_DEPLOYED_BY_RULE = "not_deployed_by_rule"  # skip / delete: its rule says deploy: false


def id_order(defender_id: str | None) -> tuple[int, int, str]:
    """Defender ids are numeric strings: order them as numbers, anything else after."""
    if defender_id is None:
        return (0, 0, "")
    if defender_id.isdigit():
        return (1, int(defender_id), defender_id)
    return (2, 0, defender_id)


@dataclass(frozen=True, slots=True)
class Change:
    """One planned change to one key.

    ``before`` is the owned indicator's key, action, application and managed fields (wire
    names, no server fields); ``after`` the body to send (``DesiredIndicator.to_body``).
    ``fields`` names the managed fields that differ. ``key`` is ``None`` only for a skipped
    OpenCTI indicator whose Defender key could not be worked out. ``rule`` names the policy
    entry that produced the change: the rule of a deployed spec, the rule or exclusion of a
    policy skip (empty when no rule decided, e.g. a delete of something no longer in OpenCTI).
    """

    kind: ChangeKind
    key: IndicatorKey | None
    defender_id: str | None = None
    opencti_ids: tuple[str, ...] = ()
    before: RawIndicator | None = None
    after: RawIndicator | None = None
    fields: tuple[str, ...] = ()
    reason: str = ""
    detail: str = ""
    rule: str = ""

    def sort_key(self) -> tuple[Any, ...]:
        t, v = (self.key.type.value, self.key.value) if self.key else ("", "")
        return (
            _ORDER[self.kind],
            t,
            v,
            id_order(self.defender_id),
            self.opencti_ids,
            self.reason,
            self.detail,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.kind.value,
            "indicatorType": self.key.type.value if self.key else None,
            "indicatorValue": self.key.value if self.key else None,
            "defender_id": self.defender_id,
            "opencti_ids": list(self.opencti_ids),
            "before": self.before,
            "after": self.after,
            "fields": list(self.fields),
            "reason": self.reason,
            "detail": self.detail,
            "rule": self.rule,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        t, v = data.get("indicatorType"), data.get("indicatorValue")
        key = IndicatorKey(IndicatorType(t), str(v)) if t is not None and v is not None else None
        return cls(
            kind=ChangeKind(data["action"]),
            key=key,
            defender_id=data.get("defender_id"),
            opencti_ids=tuple(data.get("opencti_ids") or ()),
            before=data.get("before"),
            after=data.get("after"),
            fields=tuple(data.get("fields") or ()),
            reason=str(data.get("reason", "")),
            detail=str(data.get("detail", "")),
            rule=str(data.get("rule") or ""),  # came later: a plan saved without it has none
        )


@dataclass(frozen=True)
class Guard:
    """One safety check on the plan's deletes. ``blocked`` = triggered and not overridden;
    apply holds every delete and expire back when any guard is blocked."""

    name: str
    triggered: bool
    blocked: bool
    limit: float | None
    actual: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "triggered": self.triggered,
            "blocked": self.blocked,
            "limit": self.limit,
            "actual": self.actual,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Guard:
        return cls(
            name=str(data["name"]),
            triggered=bool(data["triggered"]),
            blocked=bool(data["blocked"]),
            limit=data.get("limit"),
            actual=data["actual"],
            message=str(data.get("message", "")),
        )


@dataclass(frozen=True)
class Quota:
    """Room in Defender's 15,000 active indicators: ``free`` = ``limit - non_owned``;
    ``desired`` is the deployable count before the cut; ``used_after`` what apply leaves;
    ``not_read`` the indicators the stream's filters match that were never read because the
    read stopped once the free room was filled (counted, not listed; 0 when all were read)."""

    limit: int
    non_owned: int
    free: int
    desired: int
    planned_owned_after: int
    used_after: int
    not_read: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "non_owned": self.non_owned,
            "free": self.free,
            "desired": self.desired,
            "planned_owned_after": self.planned_owned_after,
            "used_after": self.used_after,
            "not_read": self.not_read,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quota:
        # ``not_read`` came later: a plan saved without it read everything.
        return cls(**{k: int(data.get(k, 0)) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Plan:
    """The changes, in a fixed order, plus guards, quota and fingerprints of both sides.

    ``fingerprint`` covers the owned Defender indicators the plan was made from; ``apply``
    re-lists and refuses a saved plan whose fingerprint no longer matches."""

    changes: tuple[Change, ...]
    unchanged: int
    guards: tuple[Guard, ...]
    quota: Quota
    complete: bool
    owned_count: int
    fingerprint: str
    desired_fingerprint: str
    _counts: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counts = {a.value: 0 for a in ChangeKind}
        for change in self.changes:
            counts[change.kind.value] += 1
        counts["unchanged"] = self.unchanged
        # Frozen: counted once here, so reports asking often stay cheap.
        object.__setattr__(self, "_counts", counts)

    @property
    def summary(self) -> dict[str, int]:
        """Counts per change kind plus ``unchanged`` (keys always present, fixed order)."""
        return dict(self._counts)

    @property
    def is_empty(self) -> bool:
        """Nothing would be written (skips are not writes)."""
        return all(c.kind is ChangeKind.SKIP for c in self.changes)

    @property
    def deletes_blocked(self) -> bool:
        """A guard holds this plan's deletes and expires back."""
        return any(g.blocked for g in self.guards)

    def by_kind(self, kind: ChangeKind) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind is kind)

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document (``report.render_json`` prints exactly this)."""
        return {
            "format_version": FORMAT_VERSION,
            "complete": self.complete,
            "summary": self.summary,
            "quota": self.quota.to_dict(),
            "guards": [g.to_dict() for g in self.guards],
            "owned_count": self.owned_count,
            "fingerprint": self.fingerprint,
            "desired_fingerprint": self.desired_fingerprint,
            "changes": [c.to_dict() for c in self.changes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Load a saved plan; raises ``ValueError`` on another format version."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported plan format_version {version!r}; expected '1'")
        return cls(
            changes=tuple(Change.from_dict(c) for c in data["changes"]),
            unchanged=int(data["summary"]["unchanged"]),
            guards=tuple(Guard.from_dict(g) for g in data["guards"]),
            quota=Quota.from_dict(data["quota"]),
            complete=bool(data["complete"]),
            owned_count=int(data["owned_count"]),
            fingerprint=str(data["fingerprint"]),
            desired_fingerprint=str(data["desired_fingerprint"]),
        )
