"""What each OpenCTI indicator's deployment is once a run is over: deployed (the Defender
indicators holding its values) or not deployed (each reason the plan gives), from the run's own
data: what was desired, what Defender held, the plan and what apply did.

Pure: no I/O, no clock. It decides nothing about Defender; it reads the plan and the apply
result the way a person reading the report would, and says it per OpenCTI indicator.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from reconciler.apply import ApplyResult
from reconciler.model import DefenderIndicator, DesiredIndicator, IndicatorKey, IndicatorType
from reconciler.plan import Change, ChangeKind, Plan, Reason
from reconciler.plan.document import id_order

__all__ = ["Deployment", "Refusal", "Status", "deployment_statuses"]

#: Reasons that say an OpenCTI indicator is gone from the desired state rather than refused:
#: its status is removed, not replaced by a "not deployed" one.
_GONE = frozenset({"revoked", "expired", Reason.NOT_IN_OPENCTI.value, Reason.DUPLICATE.value})


@dataclass(frozen=True, slots=True, order=True)
class Deployment:
    """One Defender indicator holding one of the OpenCTI indicator's values."""

    defender_id: str
    indicator_type: str
    value: str
    action: str
    expires: str | None  # wire form (``expirationTime``), None = never


@dataclass(frozen=True, slots=True, order=True)
class Refusal:
    """One value (or the whole indicator, ``value`` None) that is not deployed, and why."""

    reason: str  # a plan reason (quota, private_ip ...), "rejected" or "pending"
    detail: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """An OpenCTI indicator's deployment; both empty = nothing to show (no reference)."""

    deployed: tuple[Deployment, ...] = ()
    not_deployed: tuple[Refusal, ...] = ()


def deployment_statuses(
    *,
    desired: Iterable[DesiredIndicator],
    owned: Iterable[DefenderIndicator],
    plan: Plan,
    result: ApplyResult | None,
    only: Collection[str] | None = None,
) -> tuple[dict[str, Status], frozenset[str]]:
    """The status of every OpenCTI indicator the run covered (``only``: of these ids alone,
    for a scoped run whose other keys were not looked at).

    Covered: every id of a desired indicator, of a plan change (skips included) and of an
    owned indicator's ``externalId`` (so an id whose indicator left Defender gets an empty
    status, and its reference is removed). Also returns the Defender ids live after the run
    (of the keys it saw)."""
    live = _live_after(owned, plan, result)
    refused = _refusals_by_key(plan, result)
    deployed: dict[str, set[Deployment]] = {}
    not_deployed: dict[str, set[Refusal]] = {}
    for d in desired:
        dep = live.get(d.key)
        for oid in d.opencti_ids:
            if dep is not None:
                deployed.setdefault(oid, set()).add(dep)
            elif d.key not in refused:
                not_deployed.setdefault(oid, set()).add(
                    Refusal("pending", "not written to Defender yet", d.key.value)
                )
    for change in plan.changes:
        live_dep = live.get(change.key) if change.key is not None else None
        refusal = refused.get(change.key) if change.key is not None else None
        if change.key is None and change.kind is ChangeKind.SKIP:
            refusal = Refusal(change.reason, change.detail, None)
        for oid in change.opencti_ids:
            if live_dep is not None and change.kind is ChangeKind.SKIP:
                # e.g. superseded: the value is in Defender, through another indicator
                deployed.setdefault(oid, set()).add(live_dep)
            elif refusal is not None and live_dep is None:
                not_deployed.setdefault(oid, set()).add(refusal)
            else:
                deployed.setdefault(oid, set())
    for ind in owned:
        if ind.external_id:
            deployed.setdefault(ind.external_id, set())
    ids = set(deployed) | set(not_deployed)
    if only is not None:
        ids &= set(only)
    statuses = {
        oid: Status(
            tuple(sorted(deployed.get(oid, ()))),
            tuple(sorted(not_deployed.get(oid, ()), key=_refusal_order)),
        )
        for oid in ids
    }
    return statuses, frozenset(dep.defender_id for dep in live.values())


def _refusal_order(r: Refusal) -> tuple[str, str, str]:
    return (r.value or "", r.reason, r.detail)


def _live_after(
    owned: Iterable[DefenderIndicator], plan: Plan, result: ApplyResult | None
) -> dict[IndicatorKey, Deployment]:
    """The Defender indicator holding each key once apply is over (of the keys this run saw):
    what was owned, less what was removed, plus what was written."""
    removed = result.removed if result is not None and not result.dry_run else set()
    live: dict[IndicatorKey, Deployment] = {}
    for ind in sorted(owned, key=lambda i: id_order(i.id)):
        if ind.id in removed or not isinstance(ind.indicator_type, IndicatorType):
            continue
        live.setdefault(
            IndicatorKey(ind.indicator_type, ind.indicator_value),
            Deployment(
                ind.id,
                ind.indicator_type.value,
                ind.indicator_value,
                str(ind.action),
                ind.essence().get("expirationTime"),
            ),
        )
    if result is None or result.dry_run:
        return live
    for change, defender_id in result.written:
        if change.key is None or change.after is None or defender_id is None:
            continue
        live[change.key] = _written(change, defender_id)
    return live


def _written(change: Change, defender_id: str) -> Deployment:
    after: Mapping[str, object] = change.after or {}
    assert change.key is not None
    expires = after.get("expirationTime")
    return Deployment(
        defender_id,
        change.key.type.value,
        change.key.value,
        str(after.get("action")),
        expires if isinstance(expires, str) else None,
    )


def _refusals_by_key(plan: Plan, result: ApplyResult | None) -> dict[IndicatorKey, Refusal]:
    """Why each key the plan did not deploy is not deployed: its skip's (or withdrawal's)
    reason, or Defender's answer when it refused the write."""
    out: dict[IndicatorKey, Refusal] = {}
    for change in plan.changes:
        if change.key is None:
            continue
        withdrawn = change.kind in (ChangeKind.SKIP, ChangeKind.DELETE, ChangeKind.EXPIRE)
        if withdrawn and change.reason not in _GONE:
            out.setdefault(change.key, Refusal(change.reason, change.detail, change.key.value))
    if result is not None and not result.dry_run:
        for failure in result.failures:
            key = failure.change.key
            if key is not None and failure.step == "import":
                out[key] = Refusal("rejected", f"Defender refused it: {failure.reason}", key.value)
    return out
