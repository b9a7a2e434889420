"""The mapping policy: what mapping needs from the configuration, typed and immutable.

Owns ``MappingPolicy`` and ``Retire`` (what revocation and expiry do). The seed's keys
(``action``, ``passive_only``, ``rbac_group_names``, ``recommended_actions``,
``generate_alert``, ``expire_days``) make the default rule; ``rules`` come before it (first
match wins, see ``rules``); ``exclusions`` and ``skip_label`` win over every rule. The rules
and exclusions are compiled once, here, when the policy is made.

Built once by ``reconciler.wiring`` from the settings (the only place that reads them); tests
build it directly. Must not do I/O, read a clock, or read settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.defaults import EXPIRE_DAYS, OWNERSHIP_TAG
from reconciler.mapping.exclusions import Exclusion, ExclusionSet
from reconciler.mapping.rules import DEFAULT_RULE, Outcome, Rule, RuleBook
from reconciler.model import Action

__all__ = ["MappingPolicy", "Retire"]


class Retire(StrEnum):
    """What happens to the Defender indicators of a revoked (``on_revoke``) or expired
    (``on_expire``) OpenCTI indicator."""

    DELETE = "delete"  # removed from Defender (an ``expire`` change)
    AUDIT = "audit"  # kept as Audit with generateAlert on; the rule's action comes back after


@dataclass(frozen=True)
class MappingPolicy:
    """The configuration mapping needs. ``rbac_group_names`` is kept sorted and unique (so
    the desired side never differs by the order groups were listed in).

    Raises ``ValueError`` for a negative expiry, two rules of one name, a rule named
    ``default``, or an exclusion it cannot read (naming the rule or exclusion)."""

    ownership_tag: str = OWNERSHIP_TAG  # the ``application`` written on every indicator
    expire_days: int = EXPIRE_DAYS  # 0 = no cap
    action: Action | None = None  # fixed action, else score-based
    passive_only: bool = False  # the default rule's action is Audit
    rbac_group_names: tuple[str, ...] = ()
    recommended_actions: str | None = None
    generate_alert: bool = True
    educate_url: str | None = None
    reject_private_ips: bool = True
    rules: tuple[Rule, ...] = ()  # tried in order before the default rule
    on_revoke: Retire = Retire.DELETE
    on_expire: Retire = Retire.DELETE
    skip_label: str | None = None  # an indicator with this label is never deployed
    exclusions: tuple[Exclusion, ...] = ()
    #: The rules compiled (the default rule last), and the exclusions; made once.
    rule_book: RuleBook = field(init=False, repr=False, compare=False)
    exclusion_set: ExclusionSet = field(init=False, repr=False, compare=False)
    #: ``skip_label`` case-folded (``None``: no opt-out label).
    skip_label_folded: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.expire_days < 0:
            raise ValueError("expire_days must be >= 0 (0 = no cap)")
        groups = tuple(sorted({g.strip() for g in self.rbac_group_names if g.strip()}))
        object.__setattr__(self, "rbac_group_names", groups)
        names = [rule.name for rule in self.rules]
        if DEFAULT_RULE in names:
            raise ValueError(f"rule name {DEFAULT_RULE!r} is reserved for the default rule")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two rules are named {twice[0]!r}")
        object.__setattr__(self, "rule_book", RuleBook(self.rules, self.default_outcome()))
        object.__setattr__(self, "exclusion_set", ExclusionSet(self.exclusions))
        label = (self.skip_label or "").strip().casefold()
        object.__setattr__(self, "skip_label_folded", label or None)

    def default_outcome(self) -> Outcome:
        """The default rule: the seed's keys."""
        return Outcome(
            rule=DEFAULT_RULE,
            action=Action.AUDIT if self.passive_only else self.action,
            generate_alert=self.generate_alert,
            rbac_group_names=self.rbac_group_names,
            recommended_actions=self.recommended_actions,
            expire_days=self.expire_days,
        )
