"""Why one value maps as it does (``reconciler plan --explain VALUE``): the Defender keys a typed
value can stand for (``keys_for``), and for one OpenCTI indicator what becomes of each of its
values that is one of those keys, with the trace of the policy rules tried on it
(``trace_indicator``).

The outcome comes from ``map_indicator`` itself and the why from ``RuleBook.trace`` (held to the
same verdicts as the fast path by the tests), so an explanation cannot disagree with the plan.
Pure: no I/O, no clock (``now`` is an argument). Must not decide anything of its own.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from reconciler.mapping.desired import _values, map_indicator
from reconciler.mapping.models import ObservableValue, OpenCTIIndicator
from reconciler.mapping.policy import MappingPolicy
from reconciler.mapping.rules import RuleTrace
from reconciler.mapping.values import _canonical_key
from reconciler.model import DesiredIndicator, IndicatorKey, Skipped, SkipReason, format_datetime

__all__ = ["IndicatorTrace", "ValueTrace", "keys_for", "trace_indicator"]

#: Reads a typed value as every kind it may be; private addresses are keys too (the answer
#: then says they are skipped as ``private_ip``).
_READ_ANY = MappingPolicy(reject_private_ips=False)
_HASH_NAMES = {32: "MD5", 40: "SHA-1", 64: "SHA-256"}


def keys_for(text: str) -> tuple[IndicatorKey, ...]:
    """The Defender keys ``text`` can stand for, canonical: an IP address, a domain, a URL
    (only when it holds a ``/``), a file hash. Empty when it is none of them."""
    value = text.strip()
    if not value:
        return ()
    candidates = [ObservableValue("IPv4-Addr", value), ObservableValue("Domain-Name", value)]
    if "/" in value:
        candidates.append(ObservableValue("Url", value))
    algorithm = _HASH_NAMES.get(len(value))
    if algorithm is not None:
        candidates.append(ObservableValue("StixFile", hashes={algorithm: value}))
    keys: list[IndicatorKey] = []
    for obs in candidates:
        outcome = _canonical_key(obs, _READ_ANY)
        if isinstance(outcome, IndicatorKey) and outcome not in keys:
            keys.append(outcome)
    return tuple(keys)


@dataclass(frozen=True)
class ValueTrace:
    """One value of an indicator that is an asked-for key: what becomes of it (``outcome``, as
    the plan sees it), what decided that (``decided_by``: its rule, or what wins over every
    rule), the rule it gets, and every rule tried."""

    key: IndicatorKey
    observable_type: str
    outcome: str
    decided_by: str
    rule: str
    rules: tuple[RuleTrace, ...]


@dataclass(frozen=True)
class IndicatorTrace:
    """One OpenCTI indicator that contributes to the asked-for value: what rules read of it,
    and its values that are asked-for keys."""

    opencti_id: str
    name: str | None
    score: int | None
    labels: tuple[str, ...]
    markings: tuple[str, ...]
    author: str | None
    revoked: bool
    valid_until: datetime | None
    updated_at: datetime | None
    values: tuple[ValueTrace, ...]


def trace_indicator(
    ind: OpenCTIIndicator,
    keys: Collection[IndicatorKey],
    policy: MappingPolicy,
    now: datetime | None = None,
) -> IndicatorTrace:
    """What ``ind`` does for each of ``keys`` it holds, and why."""
    result = map_indicator(ind, policy, now)
    specs = {d.key: d for d in result.desired}
    skips = {s.key: s for s in result.skipped if s.key is not None}
    values: list[ValueTrace] = []
    for key, obs_type in _keys_of(ind, policy).items():
        if key not in keys:
            continue
        spec, skip = specs.get(key), skips.get(key)
        rules = policy.rule_book.trace(ind, key.type, obs_type)
        rule = next(t.rule for t in rules if t.chosen)
        decided = _decided_by(spec, skip, rule)
        values.append(ValueTrace(key, obs_type, _outcome(spec, skip), decided, rule, rules))
    author = ind.author or (ind.author_ids[0] if ind.author_ids else None)
    return IndicatorTrace(
        opencti_id=ind.id,
        name=ind.name,
        score=ind.score,
        labels=ind.labels,
        markings=ind.markings,
        author=author,
        revoked=ind.revoked,
        valid_until=ind.valid_until,
        updated_at=ind.updated_at,
        values=tuple(values),
    )


def _keys_of(ind: OpenCTIIndicator, policy: MappingPolicy) -> dict[IndicatorKey, str]:
    """Every key of ``ind`` with the OpenCTI type of the first value giving it."""
    values = _values(ind)
    if isinstance(values, Skipped):
        return {}
    found: dict[IndicatorKey, str] = {}
    for obs in values:
        outcome = _canonical_key(obs, policy)
        if isinstance(outcome, IndicatorKey):
            found.setdefault(outcome, obs.type)
    return found


_WINS_OVER_RULES = {
    SkipReason.OPTED_OUT: "the opt-out label (policy.skip_label), before any rule",
    SkipReason.REVOKED: "the revocation (policy.on_revoke: delete), before any rule",
    SkipReason.EXPIRED: "the expiry (policy.on_expire: delete)",
    SkipReason.SUPERSEDED: "the merge: another indicator with a higher priority holds the key",
}


def _decided_by(spec: DesiredIndicator | None, skip: Skipped | None, rule: str) -> str:
    if spec is not None or skip is None:
        return f"rule {rule}"
    if skip.reason is SkipReason.EXCLUDED:
        return f"exclusion {skip.rule}, before any rule"
    return _WINS_OVER_RULES.get(skip.reason, f"rule {skip.rule or rule}")


def _outcome(spec: DesiredIndicator | None, skip: Skipped | None) -> str:
    if spec is not None:
        expires = format_datetime(spec.expiration_time) or "never"
        text = f"deployed as {spec.action.value} ({spec.severity.value}), expires {expires}"
        return f"{text}; {spec.note}" if spec.note else text
    if skip is not None:
        return f"skipped: {skip.reason.value}" + (f" — {skip.detail}" if skip.detail else "")
    return "not deployed"
