"""Field rules of one Defender spec: score → action and severity (the seed's tables), the
action a policy rule fixes, expiry, title, and the description with its labels line, within
their length limits.

Implements these decisions of the package docstring: no ``BlockAndRemediate`` on network types,
the title and description limits (the labels line kept whole) and ``expirationTime`` from the
indicator's own dates. Pure: never reads a clock, no I/O.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from reconciler.mapping.models import OpenCTIIndicator
from reconciler.mapping.policy import MappingPolicy
from reconciler.mapping.rules import Outcome
from reconciler.model import Action, IndicatorKey, IndicatorType, Severity

__all__ = [
    "DESCRIPTION_LIMIT",
    "LABELS_PREFIX_TAG",
    "TITLE_LIMIT",
    "expiration_time",
    "expires_after",
    "labels_line",
    "score_action",
    "score_severity",
]

#: Longest title we send (Defender does not document a limit; keeps portal lists readable).
TITLE_LIMIT = 200
#: Longest description we send, labels line included.
DESCRIPTION_LIMIT = 1000
#: First tag of the labels line, as the seed promised ("tagged opencti plus labels").
LABELS_PREFIX_TAG = "opencti"

_NETWORK_TYPES = frozenset({IndicatorType.IP_ADDRESS, IndicatorType.DOMAIN_NAME, IndicatorType.URL})


def score_action(score: int | None) -> Action:
    """The seed's table: >= 60 Block, 30-59 Alert, 1-29 Warn, 0 or missing Audit."""
    s = score or 0
    if s >= 60:
        return Action.BLOCK
    if s >= 30:
        return Action.ALERT
    if s >= 1:
        return Action.WARN
    return Action.AUDIT


def score_severity(score: int | None) -> Severity:
    """The seed's table: >= 60 High, 30-59 Medium, 1-29 Low, 0 or missing Informational."""
    s = score or 0
    if s >= 60:
        return Severity.HIGH
    if s >= 30:
        return Severity.MEDIUM
    if s >= 1:
        return Severity.LOW
    return Severity.INFORMATIONAL


def _action_for(ind_type: IndicatorType, score: int | None, outcome: Outcome) -> Action:
    """The rule's action (``passive_only`` made the default rule's ``Audit``), else the score
    table's."""
    action = outcome.action or score_action(score)
    if action is Action.BLOCK_AND_REMEDIATE and ind_type in _NETWORK_TYPES:
        return Action.BLOCK  # Defender refuses BlockAndRemediate on network indicators
    return action


def expiration_time(ind: OpenCTIIndicator, policy: MappingPolicy) -> datetime | None:
    """The expiry under the default rule (``policy.expire_days``); see ``expires_after``."""
    return expires_after(ind, policy.expire_days)


def expires_after(ind: OpenCTIIndicator, expire_days: int) -> datetime | None:
    """The earlier of ``valid_until`` and (``updated_at`` or ``created_at``) + ``expire_days``
    (0 = no cap; a rule may set its own), whole seconds. Never reads a clock."""
    candidates: list[datetime] = []
    if ind.valid_until is not None:
        candidates.append(ind.valid_until)
    base = ind.updated_at or ind.created_at
    if expire_days > 0 and base is not None:
        # Beyond year 9999 (OverflowError) no cap is as good as any.
        with contextlib.suppress(OverflowError):
            candidates.append(base + timedelta(days=expire_days))
    if not candidates:
        return None
    return min(candidates).astimezone(UTC).replace(microsecond=0)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def labels_line(labels: Iterable[str]) -> str:
    """``Labels: opencti, <sorted, deduplicated labels>``."""
    rest = sorted({lab for lab in labels if lab and lab != LABELS_PREFIX_TAG})
    return "Labels: " + ", ".join([LABELS_PREFIX_TAG, *rest])


def _description(ind: OpenCTIIndicator) -> str:
    line = labels_line(ind.labels)
    body = (ind.description or "").strip()
    if not body:
        return _cut(line, DESCRIPTION_LIMIT)
    room = DESCRIPTION_LIMIT - len(line) - 1
    if room <= 1:
        return _cut(line, DESCRIPTION_LIMIT)
    return f"{_cut(body, room)}\n{line}"


def _title(ind: OpenCTIIndicator, key: IndicatorKey) -> str:
    name = (ind.name or "").strip()
    return _cut(name or key.value, TITLE_LIMIT)
