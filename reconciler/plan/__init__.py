"""The plan: what must change in Defender so it equals what OpenCTI says, as plain data.

``build_plan`` is a pure function of its arguments (desired indicators, the owned Defender
indicators, mapping skips, the count of indicators other tools hold, a policy). It reads no
clock, does no I/O and prints nothing; the same inputs in any order give the same ``Plan``.
Renderers (``report``) display a plan, ``apply`` executes it; neither re-diffs.

Change kinds, decided per key (indicatorType, indicatorValue):

- ``create``  desired, no owned copy in Defender;
- ``update``  an owned copy with the same action differs in a managed field;
- ``replace`` no owned copy with the desired action (Defender keys on type + value + action,
  so a changed action needs a new indicator, then the old one deleted);
- ``expire``  owned, not desired, its OpenCTI indicator revoked or past its expiry;
- ``delete``  owned, not desired (removed, or left the stream's filters), a duplicate owned
  copy of a key, or a desired key cut by the quota;
- ``skip``    desired but not deployable (mapping's reason, over the quota, or another
  application already holds the same type, value and action).

Another application's indicator with a desired key's type, value (compared case-insensitively)
and action is never overwritten: Defender upserts on (type, value, action), so importing that
key would rewrite the other indicator. The key is skipped (``held_by_other_application``), takes
no quota room, and an owned copy of it is deleted: the desired action is already in force.

Quota: ``free = quota - non_owned`` (never below 0). When more keys are desired than fit, they
are ranked by score (high first), then ``updated_at`` (newest first, unknown last), then key,
and the first ``free`` kept. Already being deployed earns no preference: a higher-scored new
indicator displaces a lower-scored deployed one (whose owned copy is deleted, reason
``quota``), so what Defender holds converges on the best intel rather than on the oldest.

Guards are evaluated here and reported in the plan; ``apply`` enforces them:

- ``empty_desired``: nothing is desired but owned indicators exist (a broken filter, an
  empty OpenCTI) — every delete is held back;
- ``max_deletes``: more than ``max_deletes`` deletes + expires (default 1000);
- ``max_delete_ratio``: deletes + expires above ``max_delete_ratio`` of the owned set (default
  0.5). It only triggers from ``ratio_min_deletes`` deletes on (default 10): on a tenant with
  3 owned indicators, removing 2 is routine, not a mass deletion;
- ``incomplete_read``: a listing failed or was truncated (``complete=False``); destructive
  changes are not planned at all (no override).

``--allow-mass-delete`` (``PlanPolicy.allow_mass_delete``) lifts the first three.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from deepdiff import DeepDiff

from reconciler.errors import ConfigError
from reconciler.model import (
    IGNORABLE_FIELDS,
    MANAGED_FIELDS,
    DefenderIndicator,
    DesiredIndicator,
    IndicatorKey,
    IndicatorType,
    RawIndicator,
    Skipped,
)

__all__ = [
    "FORMAT_VERSION",
    "IGNORABLE_FIELDS",
    "KIND_ORDER",
    "OVERRIDE_FLAG",
    "Change",
    "ChangeKind",
    "ForeignIdentity",
    "Guard",
    "Plan",
    "PlanPolicy",
    "Quota",
    "Reason",
    "build_plan",
    "fingerprint_desired",
    "fingerprint_owned",
    "foreign_identity",
]

#: (indicatorType, casefolded indicatorValue, action) of an indicator another application holds.
ForeignIdentity = tuple[str, str, str]


def foreign_identity(type_: Any, value: Any, action: Any) -> ForeignIdentity | None:
    """The identity Defender's upsert would match, in the loosest comparison we must assume
    (value case is UNCONFIRMED, so case-insensitive). ``None`` for a row missing a part."""
    parts = (type_, value, action)
    if not all(isinstance(p, str) and p.strip() for p in parts):
        return None
    return (str(type_).strip(), str(value).strip().casefold(), str(action).strip())


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
    HELD_BY_OTHER_APPLICATION = "held_by_other_application"  # skip / delete: see module doc


@dataclass(frozen=True, slots=True)
class Change:
    """One planned change to one key.

    ``before`` is the owned indicator's key, action, application and managed fields (wire
    names, no server fields); ``after`` the body to send (``DesiredIndicator.to_body``).
    ``fields`` names the managed fields that differ. ``key`` is ``None`` only for a skipped
    OpenCTI indicator whose Defender key could not be worked out.
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

    def sort_key(self) -> tuple[Any, ...]:
        t, v = (self.key.type.value, self.key.value) if self.key else ("", "")
        return (
            _ORDER[self.kind],
            t,
            v,
            _id_order(self.defender_id),
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
        )


@dataclass(frozen=True)
class PlanPolicy:
    """Knobs of the planner: quota, delete guards, fields never corrected."""

    quota: int = 15000
    max_deletes: int = 1000
    max_delete_ratio: float = 0.5
    ignore_fields: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    #: The ratio guard needs at least this many deletes to trigger (small tenants churn).
    ratio_min_deletes: int = 10

    def __post_init__(self) -> None:
        unknown = [f for f in self.ignore_fields if f not in IGNORABLE_FIELDS]
        if unknown:
            raise ConfigError(
                f"reconciler.ignore_fields: {', '.join(sorted(unknown))} cannot be ignored; "
                f"allowed: {', '.join(IGNORABLE_FIELDS)} (action is identity, never ignored)"
            )
        if self.quota < 0 or self.max_deletes < 0 or not 0 <= self.max_delete_ratio <= 1:
            raise ConfigError(
                "reconciler.quota and reconciler.max_deletes must be >= 0 and "
                "reconciler.max_delete_ratio between 0 and 1"
            )

    @classmethod
    def from_settings(cls, cfg: Any) -> PlanPolicy:
        """Build from ``cfg.reconciler`` (duck-typed: ``quota``, ``max_deletes``,
        ``max_delete_ratio``, ``ignore_fields``; missing attributes keep the defaults)."""
        section = getattr(cfg, "reconciler", cfg)
        base = cls()
        return cls(
            quota=int(getattr(section, "quota", base.quota)),
            max_deletes=int(getattr(section, "max_deletes", base.max_deletes)),
            max_delete_ratio=float(getattr(section, "max_delete_ratio", base.max_delete_ratio)),
            ignore_fields=tuple(getattr(section, "ignore_fields", ()) or ()),
            allow_mass_delete=bool(getattr(section, "allow_mass_delete", False)),
            ratio_min_deletes=int(getattr(section, "ratio_min_deletes", base.ratio_min_deletes)),
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
    ``desired`` is the deployable count before the cut; ``used_after`` what apply leaves."""

    limit: int
    non_owned: int
    free: int
    desired: int
    planned_owned_after: int
    used_after: int

    def to_dict(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "non_owned": self.non_owned,
            "free": self.free,
            "desired": self.desired,
            "planned_owned_after": self.planned_owned_after,
            "used_after": self.used_after,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quota:
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


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


# -- helpers -------------------------------------------------------------------------------


def _id_order(defender_id: str | None) -> tuple[int, int, str]:
    """Defender ids are numeric strings: order them as numbers, anything else after."""
    if defender_id is None:
        return (0, 0, "")
    if defender_id.isdigit():
        return (1, int(defender_id), defender_id)
    return (2, 0, defender_id)


def _before(ind: DefenderIndicator, essence: Mapping[str, Any]) -> RawIndicator:
    body: RawIndicator = {
        "indicatorType": ind.indicator_type.value,
        "indicatorValue": ind.indicator_value,
        "application": ind.application,
    }
    body.update(essence)
    return body


def _digest(items: Iterable[str]) -> str:
    h = hashlib.sha256()
    for item in sorted(items):
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()


def _owned_line(ind: DefenderIndicator, essence: Mapping[str, Any]) -> str:
    # repr of str/bool/None/list values is stable and several times faster than json.dumps.
    return repr(
        (
            ind.id,
            ind.indicator_type.value,
            ind.indicator_value,
            ind.application,
            *(essence[f] for f in MANAGED_FIELDS),
        )
    )


def _desired_line(d: DesiredIndicator, essence: Mapping[str, Any]) -> str:
    return repr(
        (
            d.indicator_type.value,
            d.indicator_value,
            d.application,
            *(essence[f] for f in MANAGED_FIELDS),
        )
    )


def fingerprint_owned(actual_owned: Iterable[DefenderIndicator]) -> str:
    """sha256 over the owned set (id, key, application, managed fields), order-independent.
    ``apply`` compares it with a fresh listing to refuse a stale saved plan."""
    return _digest(_owned_line(i, i.essence()) for i in actual_owned)


def fingerprint_desired(desired: Iterable[DesiredIndicator]) -> str:
    """sha256 over the desired set (key, application, managed fields), order-independent."""
    return _digest(_desired_line(d, d.essence()) for d in desired)


def _strip(essence: dict[str, Any], ignore: frozenset[str]) -> dict[str, Any]:
    if not ignore:
        return essence
    return {k: v for k, v in essence.items() if k not in ignore}


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    """Managed field names that differ, in ``MANAGED_FIELDS`` order (deepdiff, only called
    once a plain ``==`` said the essences differ: it is far slower than equality)."""
    roots = {str(k) for k in DeepDiff(old, new).affected_root_keys}
    return tuple(f for f in MANAGED_FIELDS if f in roots)


def _after(
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


# -- the planner ---------------------------------------------------------------------------


def build_plan(
    desired: Mapping[IndicatorKey, DesiredIndicator] | Iterable[DesiredIndicator],
    actual_owned: Iterable[DefenderIndicator],
    *,
    skipped: Iterable[Skipped] = (),
    expired_keys: Mapping[IndicatorKey, Skipped] | None = None,
    non_owned_count: int = 0,
    held_by_others: Mapping[ForeignIdentity, str] | None = None,
    policy: PlanPolicy = PlanPolicy(),  # frozen, so a shared default is safe
    complete: bool = True,
    scoped: bool = False,
) -> Plan:
    """Diff ``desired`` against the owned Defender indicators; pure and deterministic.

    ``expired_keys`` maps keys of revoked/expired OpenCTI indicators to their ``Skipped``; an
    owned copy of such a key (not otherwise desired) becomes ``expire``. ``complete=False``
    (either listing failed or was truncated) keeps every destructive change out.

    ``scoped=True``: both sides hold only some keys (a stream event's), so the guards about
    the whole set, ``empty_desired`` and ``max_delete_ratio``, are not evaluated (an empty
    desired side is what a deleted indicator looks like); ``max_deletes`` still is. The
    caller passes the owned indicators outside the scope in ``non_owned_count`` so the quota
    stays right.

    ``held_by_others`` maps ``foreign_identity`` of every non-owned indicator to its
    ``application``; desired keys matching one are skipped, never imported.
    """
    want: dict[IndicatorKey, DesiredIndicator] = (
        dict(desired) if isinstance(desired, Mapping) else {d.key: d for d in desired}
    )
    owned = list(actual_owned)
    expired = dict(expired_keys or {})
    ignore = frozenset(policy.ignore_fields)
    changes: list[Change] = []

    # Keys another application holds with the desired action: never written, no quota room.
    held: dict[IndicatorKey, DesiredIndicator] = {}
    if held_by_others:
        for key, d in list(want.items()):
            ident = foreign_identity(key.type.value, key.value, d.action.value)
            holder = held_by_others.get(ident) if ident is not None else None
            if holder is None:
                continue
            held[key] = want.pop(key)
            note = f"application {holder!r} holds it with action {d.action.value}"
            changes.append(_not_deployed(d, Reason.HELD_BY_OTHER_APPLICATION, note))

    # Quota: cut the lowest-ranked desired keys when they do not fit.
    free = max(0, policy.quota - non_owned_count)
    over: set[IndicatorKey] = set()
    if len(want) > free:
        ranked = sorted(want.values(), key=_rank)
        for d in ranked[free:]:
            over.add(d.key)
            note = f"over the free room of {free} (score {d.score})"
            changes.append(_not_deployed(d, Reason.QUOTA, note))

    # Each essence is computed once: it is the bulk of the cost of a 15,000-indicator no-op.
    owned_ess = [(ind, ind.essence()) for ind in owned]
    by_key: dict[IndicatorKey, list[tuple[DefenderIndicator, dict[str, Any]]]] = {}
    for ind, ess in owned_ess:
        by_key.setdefault(ind.key, []).append((ind, ess))
    desired_lines: list[str] = []

    unchanged = 0
    for key, d in want.items():
        new = d.essence()
        desired_lines.append(_desired_line(d, new))
        if key in over:
            continue
        copies = by_key.get(key, [])
        if not copies:
            changes.append(_not_deployed(d, Reason.NOT_IN_DEFENDER, kind=ChangeKind.CREATE))
            continue
        same = [c for c in copies if c[1]["action"] == new["action"]]
        kept, old = min(same or copies, key=lambda c: _id_order(c[0].id))
        for other, other_ess in copies:
            if other is not kept:
                changes.append(_delete(other, other_ess, Reason.DUPLICATE.value, d.opencti_ids))
        old_cmp, new_cmp = _strip(old, ignore), _strip(new, ignore)
        if not same:
            before = _before(kept, old)
            changes.append(
                Change(
                    ChangeKind.REPLACE,
                    key,
                    defender_id=kept.id,
                    opencti_ids=d.opencti_ids,
                    before=before,
                    after=_after(d, before, ignore),
                    fields=_changed_fields(old_cmp, new_cmp),
                    reason=Reason.ACTION_CHANGED.value,
                )
            )
        elif old_cmp == new_cmp:
            unchanged += 1
        else:
            before = _before(kept, old)
            changes.append(
                Change(
                    ChangeKind.UPDATE,
                    key,
                    defender_id=kept.id,
                    opencti_ids=d.opencti_ids,
                    before=before,
                    after=_after(d, before, ignore),
                    fields=_changed_fields(old_cmp, new_cmp),
                    reason=Reason.FIELDS_CHANGED.value,
                )
            )

    expire_done: set[tuple[IndicatorKey, str]] = set()
    for key, copies in by_key.items():
        if key in want and key not in over:
            continue
        for ind, ess in copies:
            if key in over:
                changes.append(_delete(ind, ess, Reason.QUOTA.value, want[key].opencti_ids))
            elif key in held:
                changes.append(
                    _delete(
                        ind,
                        ess,
                        Reason.HELD_BY_OTHER_APPLICATION.value,
                        held[key].opencti_ids,
                        detail="another application's indicator holds the desired action",
                    )
                )
            elif key in expired:
                why = expired[key]
                expire_done.add((key, why.opencti_id))
                changes.append(
                    _delete(
                        ind,
                        ess,
                        why.reason.value,
                        (why.opencti_id,),
                        kind=ChangeKind.EXPIRE,
                        detail=why.detail,
                    )
                )
            else:
                changes.append(_delete(ind, ess, Reason.NOT_IN_OPENCTI.value, ()))

    for s in skipped:
        # Already shown as an expire change; listing it again as a skip would double count.
        if s.key is not None and (s.key, s.opencti_id) in expire_done:
            continue
        changes.append(
            Change(
                ChangeKind.SKIP,
                s.key,
                opencti_ids=(s.opencti_id,),
                reason=s.reason.value,
                detail=_skip_detail(s),
            )
        )

    guards: list[Guard] = []
    if not complete:
        withheld = [c for c in changes if c.kind.destructive]
        changes = [c for c in changes if not c.kind.destructive]
        guards.append(
            Guard(
                name="incomplete_read",
                triggered=True,
                blocked=True,
                limit=None,
                actual=len(withheld),
                message=(
                    "a listing failed or was truncated: nothing destructive was planned "
                    f"({len(withheld)} delete/expire/replace withheld); no override"
                ),
            )
        )

    changes.sort(key=Change.sort_key)
    deletes = sum(1 for c in changes if c.kind in (ChangeKind.DELETE, ChangeKind.EXPIRE))
    creates = sum(1 for c in changes if c.kind is ChangeKind.CREATE)
    guards.extend(_guards(len(want) + len(held), len(owned), deletes, policy, scoped=scoped))
    owned_after = len(owned) + creates - deletes
    quota = Quota(
        limit=policy.quota,
        non_owned=non_owned_count,
        free=free,
        desired=len(want),
        planned_owned_after=owned_after,
        used_after=non_owned_count + owned_after,
    )
    return Plan(
        changes=tuple(changes),
        unchanged=unchanged,
        guards=tuple(guards),
        quota=quota,
        complete=complete,
        owned_count=len(owned),
        fingerprint=_digest(_owned_line(i, e) for i, e in owned_ess),
        desired_fingerprint=_digest(desired_lines),
    )


def _not_deployed(
    d: DesiredIndicator,
    reason: Reason,
    detail: str = "",
    *,
    kind: ChangeKind = ChangeKind.SKIP,
) -> Change:
    """A desired key with no owned copy: created, or skipped for ``reason``."""
    return Change(
        kind,
        d.key,
        opencti_ids=d.opencti_ids,
        after=d.to_body(),
        reason=reason.value,
        detail=detail,
    )


def _delete(
    ind: DefenderIndicator,
    essence: Mapping[str, Any],
    reason: str,
    opencti_ids: tuple[str, ...],
    *,
    kind: ChangeKind = ChangeKind.DELETE,
    detail: str = "",
) -> Change:
    return Change(
        kind,
        ind.key,
        defender_id=ind.id,
        opencti_ids=opencti_ids,
        before=_before(ind, essence),
        reason=reason,
        detail=detail,
    )


def _skip_detail(s: Skipped) -> str:
    if s.name and s.detail:
        return f"{s.name}: {s.detail}"
    return s.detail or (s.name or "")


def _guards(
    desired: int, owned: int, deletes: int, policy: PlanPolicy, *, scoped: bool
) -> list[Guard]:
    override = policy.allow_mass_delete
    held = (
        "deletes will be applied (overridden)"
        if override
        else f"deletes will not be applied (override: {OVERRIDE_FLAG})"
    )
    not_evaluated = "not evaluated on a scoped plan"
    limit_text = f"{policy.max_delete_ratio:.0%} from {policy.ratio_min_deletes} deletes"

    empty = desired == 0 and owned > 0 and not scoped
    too_many = deletes > policy.max_deletes
    ratio = deletes / owned if owned else 0.0
    too_large = (
        not scoped and deletes >= policy.ratio_min_deletes and ratio > policy.max_delete_ratio
    )
    share = f"{deletes:,} deletes are {ratio:.0%} of {owned:,} owned"

    if empty:
        empty_msg = f"nothing is desired but {owned:,} owned indicators exist; {held}"
    else:
        empty_msg = not_evaluated if scoped else f"{desired:,} desired, {owned:,} owned"
    if too_large:
        ratio_msg = f"{share}, above max_delete_ratio {policy.max_delete_ratio:.0%}; {held}"
    else:
        ratio_msg = not_evaluated if scoped else f"{share} (limit {limit_text})"
    verdict = "exceed" if too_many else "within"
    many_msg = f"{deletes:,} deletes {verdict} max_deletes {policy.max_deletes:,}"
    if too_many:
        many_msg += f"; {held}"

    return [
        Guard("empty_desired", empty, empty and not override, 0, desired, empty_msg),
        Guard(
            "max_deletes",
            too_many,
            too_many and not override,
            policy.max_deletes,
            deletes,
            many_msg,
        ),
        Guard(
            "max_delete_ratio",
            too_large,
            too_large and not override,
            policy.max_delete_ratio,
            round(ratio, 4),
            ratio_msg,
        ),
    ]
