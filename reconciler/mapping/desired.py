"""One OpenCTI indicator → Defender specs and per-value skips (``map_indicator``), and the
deterministic merge of several indicators that land on one Defender key (``merge_desired``,
``build_desired``, ``merge_results``).

Implements these decisions of the package docstring: ``Audit`` always sends
``generateAlert: true``, and expiry is compared with a clock value only when the caller passes
``now``. Total (bad input is a skip, never an exception) and pure: reads no clock, no I/O.

The policy decides each value in this order, the first that applies wins:

1. a value in an exclusion: skipped ``excluded`` (naming the exclusion), whatever else holds;
2. an indicator carrying ``skip_label``: every value skipped ``opted_out``;
3. a revoked indicator under ``on_revoke: delete``: every value skipped ``revoked``;
4. the value's rule (first match, else the default rule) says ``deploy: false``: skipped
   ``not_deployed_by_rule``;
5. past its expiry (the rule's ``expire_time``) under ``on_expire: delete``: skipped
   ``expired``;
6. deployed with the rule's fields; a revoked (``on_revoke: audit``) or expired
   (``on_expire: audit``, then without an expiry) indicator as ``Audit`` with an alert, the
   rule's other fields kept and a ``note`` saying why.

Keys skipped for 1-5 are withdrawn: the planner removes owned copies of a key no live
indicator wants (``DesiredState.expired_keys``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from reconciler.mapping.fields import (
    _action_for,
    _description,
    _title,
    expires_after,
    score_severity,
)
from reconciler.mapping.models import DesiredState, MappingResult, ObservableValue, OpenCTIIndicator
from reconciler.mapping.pattern import PatternRejected, parse_stix_pattern
from reconciler.mapping.policy import MappingPolicy, Retire
from reconciler.mapping.rules import Outcome
from reconciler.mapping.values import _canonical_key
from reconciler.model import (
    Action,
    DesiredIndicator,
    IndicatorKey,
    IndicatorType,
    Skipped,
    SkipReason,
    trusted_model,
)

__all__ = ["build_desired", "map_indicator", "merge_desired", "merge_results"]


# Mapped specs and skips are built from values that already have their field's type and
# normal form (enums, whole-second UTC datetimes, tuples, stripped ids), so they skip pydantic's
# validation, and every instance shares one ``model_fields_set`` (pydantic copies it before any
# change) instead of a ~0.7 KB set of its own: tens of MB at 15,000 indicators.
# tests/mapping/test_mapping.py checks each equals its validated twin.
_DESIRED_FIELDS: set[str] = set(DesiredIndicator.model_fields)
_SKIPPED_FIELDS: set[str] = set(Skipped.model_fields)


#: Skip reasons that withdraw a key (an owned copy no live indicator wants is removed), most
#: specific first: the reason a withdrawn key is removed for when several apply.
_WITHDRAWN: dict[SkipReason, int] = {
    reason: rank
    for rank, reason in enumerate(
        (
            SkipReason.EXCLUDED,
            SkipReason.OPTED_OUT,
            SkipReason.NOT_DEPLOYED_BY_RULE,
            SkipReason.REVOKED,
            SkipReason.EXPIRED,
        )
    )
}


def _skip(
    ind: OpenCTIIndicator,
    reason: SkipReason,
    detail: str,
    key: IndicatorKey | None = None,
    rule: str | None = None,
) -> Skipped:
    return trusted_model(
        Skipped,
        _SKIPPED_FIELDS,
        {
            "opencti_id": ind.id,
            "reason": reason,
            "detail": detail,
            "key": key,
            "name": ind.name,
            "rule": rule,
        },
    )


def _values(ind: OpenCTIIndicator) -> tuple[ObservableValue, ...] | Skipped:
    pattern_type = (ind.pattern_type or "stix").strip().lower()
    if pattern_type != "stix":
        return _skip(
            ind, SkipReason.UNSUPPORTED_PATTERN, f"pattern type {pattern_type!r} is not deployable"
        )
    if ind.observable_values:
        return ind.observable_values
    if ind.pattern is None or not ind.pattern.strip():
        return _skip(ind, SkipReason.NO_VALUE, "no observable values and no pattern")
    try:
        return parse_stix_pattern(ind.pattern)
    except PatternRejected as exc:
        return _skip(ind, exc.reason, exc.detail)
    except RecursionError:
        return _skip(ind, SkipReason.INVALID_PATTERN, "pattern nested too deeply")


def map_indicator(
    ind: OpenCTIIndicator, policy: MappingPolicy, now: datetime | None = None
) -> MappingResult:
    """Map one OpenCTI indicator to Defender specs (one per distinct key) and per-value skips.

    Revoked → every key skipped ``revoked``; with ``now`` given (the planner's clock, never
    read here), an expiry at or before ``now`` → every key skipped ``expired``. Never raises.
    """
    try:
        return _map(ind, policy, now)
    except Exception as exc:  # totality: a bug here must not lose the whole run
        ident = getattr(ind, "id", "")
        return MappingResult(
            skipped=(
                Skipped(
                    opencti_id=ident if isinstance(ident, str) else "",
                    reason=SkipReason.INVALID_VALUE,
                    detail=f"mapping failed: {type(exc).__name__}",
                ),
            )
        )


def _map(ind: OpenCTIIndicator, policy: MappingPolicy, now: datetime | None) -> MappingResult:
    values = _values(ind)
    if isinstance(values, Skipped):
        return MappingResult(skipped=(values,))
    found, excluded, skipped = _find_keys(ind, values, policy)
    if not found and not excluded and not skipped:
        return MappingResult(skipped=(_skip(ind, SkipReason.NO_VALUE, "no deployable value"),))
    keys = sorted(found)
    label = policy.skip_label_folded
    if keys and label is not None and any(lab.casefold() == label for lab in ind.labels):
        detail = f"carries the label {policy.skip_label!r} (policy.skip_label)"
        opted = tuple(_skip(ind, SkipReason.OPTED_OUT, detail, k) for k in keys)
        return MappingResult(skipped=(*opted, *excluded, *skipped))
    if ind.revoked and policy.on_revoke is Retire.DELETE:
        if not keys and not excluded:
            return MappingResult(skipped=(_skip(ind, SkipReason.REVOKED, "revoked in OpenCTI"),))
        revoked = tuple(_skip(ind, SkipReason.REVOKED, "revoked in OpenCTI", k) for k in keys)
        return MappingResult(skipped=(*revoked, *excluded))
    desired, key_skips = _by_rule(ind, keys, found, policy, now)
    return MappingResult(desired=tuple(desired), skipped=(*key_skips, *excluded, *skipped))


def _find_keys(
    ind: OpenCTIIndicator, values: Sequence[ObservableValue], policy: MappingPolicy
) -> tuple[dict[IndicatorKey, str], list[Skipped], list[Skipped]]:
    """The deployable keys (each with the OpenCTI type of the value it came from), the
    excluded ones (as skips, in key order), and the values that are not deployable."""
    found: dict[IndicatorKey, str] = {}
    excluded: dict[IndicatorKey, Skipped] = {}
    skipped: list[Skipped] = []
    exclusions = policy.exclusion_set if policy.exclusions else None
    for obs in values:
        outcome = _canonical_key(obs, policy)
        if not isinstance(outcome, IndicatorKey):
            skip = _skip(ind, outcome[0], outcome[1])
            if skip not in skipped:
                skipped.append(skip)
            continue
        if outcome in found or outcome in excluded:
            continue
        hit = None if exclusions is None else exclusions.match(outcome, obs)
        if hit is None:
            found[outcome] = obs.type
        else:
            detail = hit.detail(outcome)
            excluded[outcome] = _skip(ind, SkipReason.EXCLUDED, detail, outcome, hit.name)
    skipped.sort(key=_skip_order)
    return found, [excluded[k] for k in sorted(excluded)], skipped


def _by_rule(
    ind: OpenCTIIndicator,
    keys: Sequence[IndicatorKey],
    found: dict[IndicatorKey, str],
    policy: MappingPolicy,
    now: datetime | None,
) -> tuple[list[DesiredIndicator], list[Skipped]]:
    """Steps 4-6 of the module docstring, per key: its rule, its expiry, its spec."""
    book = policy.rule_book
    candidates = book.candidates(ind)  # the per-indicator pass over the rules, done once
    desired: list[DesiredIndicator] = []
    skips: list[Skipped] = []
    for key in keys:
        outcome = book.pick(candidates, key.type, found[key]) if candidates else book.default
        if not outcome.deploy:
            detail = f"rule {outcome.rule!r} says deploy: false"
            skips.append(_skip(ind, SkipReason.NOT_DEPLOYED_BY_RULE, detail, key, outcome.rule))
            continue
        expires = expires_after(ind, outcome.expire_days)
        expired = now is not None and expires is not None and expires <= now
        if expired and policy.on_expire is Retire.DELETE:
            assert expires is not None  # expired implies it
            detail = f"expired at {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"
            skips.append(_skip(ind, SkipReason.EXPIRED, detail, key))
            continue
        note = (
            _kept_as_audit(ind.revoked, expires if expired else None)
            if ind.revoked or expired
            else ""
        )
        desired.append(_desired(ind, key, outcome, policy, None if expired else expires, note))
    return desired, skips


def _kept_as_audit(revoked: bool, expired_at: datetime | None) -> str:
    """Why a spec is ``Audit`` whatever its rule says ("" when it is not)."""
    reasons = []
    if revoked:
        reasons.append("revoked in OpenCTI (policy.on_revoke: audit)")
    if expired_at is not None:
        when = expired_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        reasons.append(f"expired at {when} (policy.on_expire: audit)")
    return "; ".join(reasons) + ": kept as Audit" if reasons else ""


def _desired(
    ind: OpenCTIIndicator,
    key: IndicatorKey,
    outcome: Outcome,
    policy: MappingPolicy,
    expires: datetime | None,
    note: str,
) -> DesiredIndicator:
    action = Action.AUDIT if note else _action_for(key.type, ind.score, outcome)
    educate = (
        policy.educate_url
        if key.type is IndicatorType.URL and action in {Action.BLOCK, Action.WARN}
        else None
    )
    return trusted_model(
        DesiredIndicator,
        _DESIRED_FIELDS,
        {
            "indicator_type": key.type,
            "indicator_value": key.value,
            "action": action,
            "severity": outcome.severity or score_severity(ind.score),
            "title": _title(ind, key),
            "description": _description(ind),
            "application": policy.ownership_tag,
            "external_id": ind.id,
            "expiration_time": expires,
            "generate_alert": True if action is Action.AUDIT else outcome.generate_alert,
            "rbac_group_names": outcome.rbac_group_names,
            "recommended_actions": outcome.recommended_actions,
            "educate_url": educate,
            "score": max(ind.score or 0, 0),
            "updated_at": ind.updated_at,
            "opencti_ids": (ind.id,),
            "rule": outcome.rule,
            "note": note,
        },
    )


def _skip_order(skip: Skipped) -> tuple[str, str, str, str]:
    return (skip.opencti_id, skip.reason.value, str(skip.key or ""), skip.detail)


def _withdrawn_order(skip: Skipped) -> tuple[int, str, str, str, str]:
    return (_WITHDRAWN.get(skip.reason, len(_WITHDRAWN)), *_skip_order(skip))


_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def _priority(item: DesiredIndicator) -> tuple[int, float, str, str]:
    # Sorted ascending, so the winner comes first: highest score, newest update, smallest id;
    # the JSON dump only breaks ties between two renderings of the very same id.
    updated = (item.updated_at or _EPOCH).timestamp()
    return (-item.score, -updated, item.external_id, item.model_dump_json())


def _merge_group(
    items: Sequence[DesiredIndicator],
) -> tuple[DesiredIndicator, list[DesiredIndicator]]:
    ranked = sorted(items, key=_priority)
    winner = ranked[0]
    ids = sorted({i for item in ranked for i in (item.opencti_ids or (item.external_id,))})
    return winner.model_copy(update={"opencti_ids": tuple(ids)}), ranked[1:]


def _group(items: Iterable[DesiredIndicator]) -> dict[IndicatorKey, list[DesiredIndicator]]:
    groups: dict[IndicatorKey, list[DesiredIndicator]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    return groups


def merge_desired(items: Iterable[DesiredIndicator]) -> dict[IndicatorKey, DesiredIndicator]:
    """One spec per key: highest score, then newest ``updated_at``, then smallest id wins and
    keeps its own fields; ``opencti_ids`` lists every contributor. Same result in any order;
    the dict is ordered by key."""
    groups = _group(items)
    return {key: _merge_group(groups[key])[0] for key in sorted(groups)}


def build_desired(
    indicators: Iterable[OpenCTIIndicator | Skipped],
    policy: MappingPolicy,
    now: datetime | None = None,
) -> DesiredState:
    """Map every indicator, merge per key, and collect every skip (read failures, value skips,
    ``superseded`` losers). ``expired_keys`` are the withdrawn keys (revoked, expired, or skipped
    by the policy: excluded, opted out, not deployed by rule) that no live indicator wants."""
    results: list[MappingResult] = []
    read_skips: list[Skipped] = []
    for item in indicators:
        if isinstance(item, Skipped):
            read_skips.append(item)
        else:
            results.append(map_indicator(item, policy, now))
    return merge_results(results, extra_skips=read_skips)


def merge_results(
    results: Iterable[MappingResult], *, extra_skips: Iterable[Skipped] = ()
) -> DesiredState:
    """Merge already-mapped results into one desired state (the second half of
    ``build_desired``; the controller keeps results per indicator and merges slices)."""
    desired_items: list[DesiredIndicator] = []
    skipped: list[Skipped] = list(extra_skips)
    for result in results:
        desired_items.extend(result.desired)
        skipped.extend(result.skipped)

    desired: dict[IndicatorKey, DesiredIndicator] = {}
    groups = _group(desired_items)
    for key in sorted(groups):
        group = groups[key]
        if len(group) == 1 and group[0].opencti_ids:
            desired[key] = group[0]  # fast path: nothing to merge
            continue
        winner, losers = _merge_group(group)
        desired[key] = winner
        for loser in losers:
            skipped.append(
                Skipped(
                    opencti_id=loser.external_id,
                    reason=SkipReason.SUPERSEDED,
                    detail=f"merged into {winner.external_id}",
                    key=key,
                    name=loser.title,
                )
            )

    expired: dict[IndicatorKey, Skipped] = {}
    for skip in sorted(skipped, key=_withdrawn_order):
        if skip.reason in _WITHDRAWN and skip.key is not None and skip.key not in desired:
            expired.setdefault(skip.key, skip)
    unique = sorted(set(skipped), key=_skip_order)
    return DesiredState(
        desired=desired,
        skipped=tuple(unique),
        expired_keys={k: expired[k] for k in sorted(expired)},
    )
