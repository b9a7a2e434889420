"""Policy rules: which rule decides one value of one OpenCTI indicator, and what it sets.

Owns ``RuleMatch`` (a rule's conditions), ``Rule`` (its conditions and what it sets, or
``deploy: false``), ``Outcome`` (a rule's settings with the default rule's filled in), ``Facts``
(what rules read of one indicator), ``RuleBook`` (the rules compiled once) and ``RuleTrace``
(why a rule matched or not, for ``plan --explain``).

Semantics: a rule's conditions are AND-ed; the values listed for one condition are OR-ed
(``labels: [a, b]``: carries a or b); names compare case-insensitively; a missing score is 0
(as in the seed's score table). Rules are tried in order and the first match wins; the default
rule, made from the seed's keys, matches everything and comes last. What a rule leaves unset it
takes from the default rule.

Cost: ``RuleBook`` compiles the rules once into bit masks: per label, marking and author value,
per score (0-100) and per value type, the rules each lets through. Choosing a rule is one dict
look-up per label, marking and author of the indicator and a few integer ANDs (no parsing, no
regex, no loop over the rules), then per value one AND with the type's mask and its lowest bit.
``RuleBook.trace`` is the slow, wordy twin, condition by condition per rule (tests hold both to
the same verdicts). Pure: no I/O, no clock, no settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypeVar

from reconciler.defaults import EXPIRE_DAYS
from reconciler.mapping.models import OpenCTIIndicator
from reconciler.model import OBSERVABLE_TYPES, Action, IndicatorType, Severity

__all__ = [
    "BY_SCORE",
    "DEFAULT_RULE",
    "Facts",
    "Outcome",
    "Rule",
    "RuleBook",
    "RuleMatch",
    "RuleTrace",
    "rule_type_names",
]

_E = TypeVar("_E", bound=StrEnum)

#: A rule's ``action`` or ``severity`` set to this follows the seed's score table.
BY_SCORE: Literal["score"] = "score"
#: The name of the rule the seed's keys make (reserved: no configured rule may take it).
DEFAULT_RULE = "default"

_DEFENDER_TYPES = {
    t.value.casefold(): t for t in IndicatorType if t is not IndicatorType.CERTIFICATE_THUMBPRINT
}
_OBSERVABLE_TYPES = frozenset({*(t.casefold() for t in OBSERVABLE_TYPES), "file"})


def rule_type_names() -> tuple[str, ...]:
    """The names a rule's ``types`` condition accepts: Defender indicator types, then OpenCTI
    observable types (``Url`` is both)."""
    defender = [t.value for t in _DEFENDER_TYPES.values()]
    return (*defender, *(t for t in OBSERVABLE_TYPES if t.casefold() not in _DEFENDER_TYPES))


def _fold(values: Sequence[str]) -> frozenset[str]:
    return frozenset(v.strip().casefold() for v in values if v.strip())


@dataclass(frozen=True)
class RuleMatch:
    """A rule's conditions (all must hold; an empty one is no condition). ``types`` names
    Defender indicator types (``IpAddress``) or OpenCTI observable types (``IPv4-Addr``);
    ``score_min`` and ``score_max`` are inclusive."""

    labels: tuple[str, ...] = ()
    markings: tuple[str, ...] = ()  # definitions (TLP:AMBER) or ids
    authors: tuple[str, ...] = ()  # createdBy names or ids
    score_min: int | None = None
    score_max: int | None = None
    types: tuple[str, ...] = ()
    pattern_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        low, high = self.score_min, self.score_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"score_min {low} is above score_max {high}")
        unknown = [t for t in self.types if t.strip().casefold() not in _ACCEPTED_TYPES]
        if unknown:
            raise ValueError(
                f"unknown type {unknown[0]!r}; accepted: {', '.join(rule_type_names())}"
            )

    @property
    def matches_everything(self) -> bool:
        return not (
            self.labels
            or self.markings
            or self.authors
            or self.types
            or self.pattern_types
            or self.score_min is not None
            or self.score_max is not None
        )


_ACCEPTED_TYPES = frozenset(_DEFENDER_TYPES) | _OBSERVABLE_TYPES


@dataclass(frozen=True)
class Rule:
    """One configured rule: its conditions and what it sets (``None``: the default rule's
    value). ``action``/``severity`` ``"score"``: by the score table; ``recommended_actions``
    ``""``: none; ``deploy=False``: the values it matches are never deployed (and an owned
    copy is deleted)."""

    name: str
    match: RuleMatch = field(default_factory=RuleMatch)
    deploy: bool = True
    action: Action | Literal["score"] | None = None
    severity: Severity | Literal["score"] | None = None
    generate_alert: bool | None = None
    rbac_group_names: tuple[str, ...] | None = None
    recommended_actions: str | None = None
    expire_days: int | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a rule needs a name")
        if self.expire_days is not None and self.expire_days < 0:
            raise ValueError(f"rule {self.name!r}: expire_time must be >= 0 (0 = no cap)")
        if not self.deploy and self.sets_fields:
            raise ValueError(
                f"rule {self.name!r}: deploy: false deploys nothing, so it cannot also set "
                "action, severity, generate_alert, rbac_group_names, recommended_actions or "
                "expire_time"
            )
        if self.action in (Action.AUDIT, Action.ALERT) and self.generate_alert is False:
            raise ValueError(
                f"rule {self.name!r}: action {self.action} always raises an alert (Defender "
                "requires generateAlert for it); remove generate_alert: false"
            )

    @property
    def sets_fields(self) -> bool:
        """Whether the rule sets any indicator field."""
        return any(
            v is not None
            for v in (
                self.action,
                self.severity,
                self.generate_alert,
                self.rbac_group_names,
                self.recommended_actions,
                self.expire_days,
            )
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a rule makes of a value, every setting resolved: ``action``/``severity`` ``None``
    follow the score table; ``rbac_group_names`` is sorted and unique."""

    rule: str
    deploy: bool = True
    action: Action | None = None
    severity: Severity | None = None
    generate_alert: bool = True
    rbac_group_names: tuple[str, ...] = ()
    recommended_actions: str | None = None
    expire_days: int = EXPIRE_DAYS

    def __post_init__(self) -> None:
        groups = tuple(sorted({g.strip() for g in self.rbac_group_names if g.strip()}))
        object.__setattr__(self, "rbac_group_names", groups)

    def under(self, rule: Rule) -> Outcome:
        """``rule``'s settings, with this outcome's (the default rule's) where it sets none."""
        groups = self.rbac_group_names if rule.rbac_group_names is None else rule.rbac_group_names
        advice = self.recommended_actions
        if rule.recommended_actions is not None:
            advice = rule.recommended_actions or None
        alert = self.generate_alert if rule.generate_alert is None else rule.generate_alert
        return Outcome(
            rule=rule.name,
            deploy=rule.deploy,
            # A set value wins; "score" (a plain str, not a member) means the score table.
            action=self.action if rule.action is None else _member(rule.action, Action),
            severity=self.severity if rule.severity is None else _member(rule.severity, Severity),
            generate_alert=alert,
            rbac_group_names=groups,
            recommended_actions=advice,
            expire_days=self.expire_days if rule.expire_days is None else rule.expire_days,
        )


def _member(value: object, enum: type[_E]) -> _E | None:
    """``value`` when it is a member of ``enum``, else ``None`` (``BY_SCORE``)."""
    return value if isinstance(value, enum) else None


@dataclass(frozen=True, slots=True)
class Facts:
    """What rules read of one indicator, folded once: labels, markings (definitions and ids),
    author (name and ids), score (missing = 0), pattern type (missing = stix)."""

    labels: frozenset[str]
    markings: frozenset[str]
    authors: frozenset[str]
    score: int
    pattern_type: str

    @classmethod
    def of(cls, ind: OpenCTIIndicator) -> Facts:
        author = (ind.author,) if ind.author else ()
        return cls(
            labels=_fold(ind.labels),
            markings=_fold((*ind.markings, *ind.marking_ids)),
            authors=_fold((*author, *ind.author_ids)),
            score=ind.score or 0,
            pattern_type=(ind.pattern_type or "stix").strip().casefold(),
        )


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule tried on one value: whether its conditions hold (``matched``), whether it is
    the rule that decided (``chosen``: the first that matched), and one line per condition."""

    rule: str
    matched: bool
    chosen: bool
    why: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rule's conditions as sets and bounds, and its resolved outcome."""

    outcome: Outcome
    match: RuleMatch
    labels: frozenset[str]
    markings: frozenset[str]
    authors: frozenset[str]
    pattern_types: frozenset[str]
    defender_types: frozenset[IndicatorType]
    observable_types: frozenset[str]

    @classmethod
    def of(cls, rule: Rule, default: Outcome) -> _Compiled:
        m = rule.match
        types = _fold(m.types)
        return cls(
            outcome=default.under(rule),
            match=m,
            labels=_fold(m.labels),
            markings=_fold(m.markings),
            authors=_fold(m.authors),
            pattern_types=_fold(m.pattern_types),
            defender_types=frozenset(_DEFENDER_TYPES[t] for t in types if t in _DEFENDER_TYPES),
            observable_types=frozenset(t for t in types if t in _OBSERVABLE_TYPES),
        )

    def fits(self, facts: Facts) -> bool:
        """The indicator-level conditions (all but ``types``)."""
        m = self.match
        return not (
            (self.labels and self.labels.isdisjoint(facts.labels))
            or (self.markings and self.markings.isdisjoint(facts.markings))
            or (self.authors and self.authors.isdisjoint(facts.authors))
            or (m.score_min is not None and facts.score < m.score_min)
            or (m.score_max is not None and facts.score > m.score_max)
            or (self.pattern_types and facts.pattern_type not in self.pattern_types)
        )

    def fits_type(self, key_type: IndicatorType, folded_obs_type: str) -> bool:
        """The ``types`` condition, for one value (``folded_obs_type`` already case-folded)."""
        if not self.defender_types and not self.observable_types:
            return True
        return key_type in self.defender_types or folded_obs_type in self.observable_types

    def explain(
        self, facts: Facts, key_type: IndicatorType, obs_type: str
    ) -> tuple[bool, list[str]]:
        """The same verdict as ``fits`` and ``fits_type``, with one line per condition."""
        m = self.match
        lines: list[str] = []
        ok = True
        for what, wanted, shown, have in (
            ("labels", self.labels, m.labels, facts.labels),
            ("markings", self.markings, m.markings, facts.markings),
            ("author", self.authors, m.authors, facts.authors),
        ):
            if not wanted:
                continue
            hit = sorted(wanted & have)
            ok &= bool(hit)
            wanted_text = ", ".join(shown)
            lines.append(
                f"{what}: has {', '.join(hit)}"
                if hit
                else f"{what}: none of {wanted_text} (has {', '.join(sorted(have)) or 'none'})"
            )
        if m.score_min is not None or m.score_max is not None:
            low = 0 if m.score_min is None else m.score_min
            high = 100 if m.score_max is None else m.score_max
            inside = (m.score_min is None or facts.score >= m.score_min) and (
                m.score_max is None or facts.score <= m.score_max
            )
            ok &= inside
            lines.append(f"score {facts.score} {'in' if inside else 'not in'} {low}..{high}")
        if self.pattern_types:
            inside = facts.pattern_type in self.pattern_types
            ok &= inside
            verb = "is one of" if inside else "is not one of"
            lines.append(f"pattern type {facts.pattern_type} {verb} {', '.join(m.pattern_types)}")
        if self.defender_types or self.observable_types:
            inside = self.fits_type(key_type, obs_type.casefold())
            ok &= inside
            verb = "is one of" if inside else "is not one of"
            lines.append(f"type {key_type.value} ({obs_type}) {verb} {', '.join(m.types)}")
        return ok, lines or ["no conditions: matches everything"]


class _Index:
    """One set-valued condition over all rules: the rules without it (``free``) and, for each
    value, the rules naming it, as bit masks (bit ``i`` = rule ``i``)."""

    __slots__ = ("by_value", "free")

    def __init__(self, sets: Sequence[frozenset[str]]) -> None:
        self.free = 0
        self.by_value: dict[str, int] = {}
        for bit, values in enumerate(sets):
            if not values:
                self.free |= 1 << bit
            for value in values:
                self.by_value[value] = self.by_value.get(value, 0) | 1 << bit

    def mask(self, values: Iterable[str]) -> int:
        """The rules this condition lets through for an indicator holding ``values``."""
        found = self.free
        get = self.by_value.get
        for value in values:
            found |= get(value.strip().casefold(), 0)
        return found


class RuleBook:
    """The configured rules compiled once, then the default rule; picks the rule for a value.

    ``candidates`` is the per-indicator pass: a bit mask of the rules whose indicator-level
    conditions hold, one dict look-up per label, marking and author and a table look-up for the
    score, whatever the number of rules. ``pick`` is the per-value choice among them: the lowest
    bit left once the ``types`` condition's mask (precomputed per value type) is applied.
    ``trace`` explains the same choice the slow way, condition by condition."""

    __slots__ = (
        "_all",
        "_authors",
        "_labels",
        "_markings",
        "_patterns",
        "_rules",
        "_scores",
        "_types",
        "default",
    )

    def __init__(self, rules: Sequence[Rule], default: Outcome) -> None:
        self.default = default
        self._rules = tuple(_Compiled.of(rule, default) for rule in rules)
        compiled = self._rules
        self._all = (1 << len(compiled)) - 1
        self._labels = _Index([r.labels for r in compiled])
        self._markings = _Index([r.markings for r in compiled])
        self._authors = _Index([r.authors for r in compiled])
        self._patterns = _Index([r.pattern_types for r in compiled])
        self._scores = [self._score_mask(score) for score in range(101)]
        self._types: dict[tuple[IndicatorType, str], int] = {
            (kind, obs): self._type_mask(kind, obs)
            for kind in _DEFENDER_TYPES.values()
            for obs in _OBSERVABLE_TYPES
        }

    def _score_mask(self, score: int) -> int:
        found = 0
        for bit, rule in enumerate(self._rules):
            low, high = rule.match.score_min, rule.match.score_max
            if (low is None or score >= low) and (high is None or score <= high):
                found |= 1 << bit
        return found

    def _type_mask(self, key_type: IndicatorType, folded_obs_type: str) -> int:
        found = 0
        for bit, rule in enumerate(self._rules):
            if rule.fits_type(key_type, folded_obs_type):
                found |= 1 << bit
        return found

    def __len__(self) -> int:
        """The configured rules (the default rule aside)."""
        return len(self._rules)

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """Every rule's outcome, the default rule's last."""
        return (*(r.outcome for r in self._rules), self.default)

    def candidates(self, ind: OpenCTIIndicator) -> int:
        """The rules whose indicator-level conditions hold for ``ind``, as a bit mask."""
        if not self._all:
            return 0
        found = self._all
        if self._labels.free != self._all:
            found &= self._labels.mask(ind.labels)
        if found and self._markings.free != self._all:
            found &= self._markings.mask((*ind.markings, *ind.marking_ids))
        if found and self._authors.free != self._all:
            found &= self._authors.mask((*((ind.author,) if ind.author else ()), *ind.author_ids))
        if found and self._patterns.free != self._all:
            found &= self._patterns.mask(((ind.pattern_type or "stix").strip(),))
        if found:
            score = ind.score or 0
            found &= self._scores[score] if 0 <= score <= 100 else self._score_mask(score)
        return found

    def pick(self, candidates: int, key_type: IndicatorType, obs_type: str) -> Outcome:
        """The first candidate whose ``types`` condition holds for this value, else the
        default rule."""
        if not candidates:
            return self.default
        folded = obs_type.casefold()
        types = self._types.get((key_type, folded))
        if types is None:  # an observable type no rule can name: only rules without types
            types = self._type_mask(key_type, folded)
        found = candidates & types
        if not found:
            return self.default
        return self._rules[(found & -found).bit_length() - 1].outcome

    def trace(
        self, ind: OpenCTIIndicator, key_type: IndicatorType, obs_type: str
    ) -> tuple[RuleTrace, ...]:
        """Every rule tried on one value, in order, with why it matched or not."""
        facts = Facts.of(ind)
        traces: list[RuleTrace] = []
        decided = False
        for rule in self._rules:
            ok, why = rule.explain(facts, key_type, obs_type)
            traces.append(RuleTrace(rule.outcome.rule, ok, ok and not decided, tuple(why)))
            decided |= ok
        everything = ("the default rule: matches everything",)
        traces.append(RuleTrace(self.default.rule, True, not decided, everything))
        return tuple(traces)
