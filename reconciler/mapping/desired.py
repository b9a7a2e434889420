"""One OpenCTI indicator → Defender specs and per-value skips (``map_indicator``), and the
deterministic merge of several indicators that land on one Defender key (``merge_desired``,
``build_desired``, ``merge_results``).

Implements these decisions of the package docstring: ``Audit`` always sends
``generateAlert: true``, and expiry is compared with a clock value only when the caller passes
``now``. Total (bad input is a skip, never an exception) and pure: reads no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from reconciler.mapping.fields import (
    _action_for,
    _description,
    _title,
    expiration_time,
    score_severity,
)
from reconciler.mapping.models import DesiredState, MappingResult, ObservableValue, OpenCTIIndicator
from reconciler.mapping.pattern import PatternRejected, parse_stix_pattern
from reconciler.mapping.policy import MappingPolicy
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


def _skip(
    ind: OpenCTIIndicator, reason: SkipReason, detail: str, key: IndicatorKey | None = None
) -> Skipped:
    return trusted_model(
        Skipped,
        _SKIPPED_FIELDS,
        {"opencti_id": ind.id, "reason": reason, "detail": detail, "key": key, "name": ind.name},
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
    keys: list[IndicatorKey] = []
    skipped: list[Skipped] = []
    for obs in values:
        outcome = _canonical_key(obs, policy)
        if isinstance(outcome, IndicatorKey):
            if outcome not in keys:
                keys.append(outcome)
        else:
            skip = _skip(ind, outcome[0], outcome[1])
            if skip not in skipped:
                skipped.append(skip)
    keys.sort()
    skipped.sort(key=_skip_order)
    if not keys and not skipped:
        return MappingResult(skipped=(_skip(ind, SkipReason.NO_VALUE, "no deployable value"),))

    if ind.revoked:
        if not keys:
            return MappingResult(skipped=(_skip(ind, SkipReason.REVOKED, "revoked in OpenCTI"),))
        return MappingResult(
            skipped=tuple(_skip(ind, SkipReason.REVOKED, "revoked in OpenCTI", k) for k in keys)
        )
    expires = expiration_time(ind, policy)
    if now is not None and expires is not None and expires <= now:
        detail = f"expired at {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        return MappingResult(
            skipped=tuple(_skip(ind, SkipReason.EXPIRED, detail, k) for k in keys) + tuple(skipped)
        )
    desired = tuple(_desired(ind, key, policy, expires) for key in keys)
    return MappingResult(desired=desired, skipped=tuple(skipped))


def _desired(
    ind: OpenCTIIndicator, key: IndicatorKey, policy: MappingPolicy, expires: datetime | None
) -> DesiredIndicator:
    action = _action_for(key.type, ind.score, policy)
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
            "severity": score_severity(ind.score),
            "title": _title(ind, key),
            "description": _description(ind),
            "application": policy.ownership_tag,
            "external_id": ind.id,
            "expiration_time": expires,
            "generate_alert": True if action is Action.AUDIT else policy.generate_alert,
            "rbac_group_names": tuple(sorted(set(policy.rbac_group_names))),
            "recommended_actions": policy.recommended_actions,
            "educate_url": educate,
            "score": max(ind.score or 0, 0),
            "updated_at": ind.updated_at,
            "opencti_ids": (ind.id,),
        },
    )


def _skip_order(skip: Skipped) -> tuple[str, str, str, str]:
    return (skip.opencti_id, skip.reason.value, str(skip.key or ""), skip.detail)


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
    ``superseded`` losers). ``expired_keys`` are the keys of revoked/expired indicators that no
    live indicator wants."""
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
    gone = (SkipReason.REVOKED, SkipReason.EXPIRED)
    for skip in sorted(skipped, key=_skip_order):
        if skip.reason in gone and skip.key is not None and skip.key not in desired:
            expired.setdefault(skip.key, skip)
    unique = sorted(set(skipped), key=_skip_order)
    return DesiredState(
        desired=desired,
        skipped=tuple(unique),
        expired_keys={k: expired[k] for k in sorted(expired)},
    )
