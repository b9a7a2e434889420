"""The values mapping passes around: one normalised OpenCTI indicator (whichever rendering it
was read from) and its observable values, what one indicator maps to, and the merged desired
state of a reconcile.

Plain frozen dataclasses: no validation, no mapping rule (those live in the sibling modules),
no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.model import DesiredIndicator, IndicatorKey, Skipped

__all__ = ["DesiredState", "MappingResult", "ObservableValue", "OpenCTIIndicator"]


@dataclass(frozen=True, slots=True)
class ObservableValue:
    """One value of an indicator, in OpenCTI naming (``IPv4-Addr``, ``StixFile``, ...).
    ``hashes`` keys are canonical (``MD5``, ``SHA-1``, ``SHA-256``, ``SHA-512``, other upper)."""

    type: str
    value: str | None = None
    hashes: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class OpenCTIIndicator:
    """The one normalised OpenCTI indicator, whichever rendering it was read from."""

    id: str
    standard_id: str | None = None
    name: str | None = None
    description: str | None = None
    pattern: str | None = None
    pattern_type: str | None = None
    score: int | None = None
    revoked: bool = False
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    labels: tuple[str, ...] = ()
    main_observable_type: str | None = None
    observable_values: tuple[ObservableValue, ...] = ()
    detection: bool | None = None
    #: Marking definitions (``TLP:AMBER``); a marking read without one shows as its id.
    markings: tuple[str, ...] = ()
    #: Internal and STIX ids of the markings (a rule may name a marking by id).
    marking_ids: tuple[str, ...] = ()
    #: The author's (``createdBy``) name, when the rendering carries it.
    author: str | None = None
    #: The author's internal and STIX ids.
    author_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MappingResult:
    """What one OpenCTI indicator maps to: Defender specs and per-value skips."""

    desired: tuple[DesiredIndicator, ...] = ()
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True)
class DesiredState:
    """The merged desired side of a reconcile.

    ``expired_keys`` holds the withdrawn keys: keys that only revoked/expired indicators, or
    the policy's skips (excluded, opted_out, not_deployed_by_rule), produce (never a key that is
    also desired), each with the skip it is removed for (the most specific reason first), so the
    planner can remove owned copies (``expire`` for revoked/expired, ``delete`` for the rest)."""

    desired: dict[IndicatorKey, DesiredIndicator]
    skipped: tuple[Skipped, ...]
    expired_keys: dict[IndicatorKey, Skipped]
