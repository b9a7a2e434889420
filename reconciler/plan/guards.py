"""The guards on a plan's deletes, and their messages.

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

This module only builds ``Guard`` records from counts; it never removes a change (the planner
withholds destructive changes of an incomplete read) and does no I/O.
"""

from __future__ import annotations

from reconciler.plan.document import OVERRIDE_FLAG, Guard
from reconciler.plan.policy import PlanPolicy

__all__ = ["delete_guards", "incomplete_read_guard"]

_NOT_EVALUATED = "not evaluated on a scoped plan"


def incomplete_read_guard(withheld: int) -> Guard:
    """The guard of a plan made from an incomplete read; ``withheld`` destructive changes."""
    return Guard(
        name="incomplete_read",
        triggered=True,
        blocked=True,
        limit=None,
        actual=withheld,
        message=(
            "a listing failed or was truncated: nothing destructive was planned "
            f"({withheld} delete/expire/replace withheld); no override"
        ),
    )


def delete_guards(
    desired: int, owned: int, deletes: int, policy: PlanPolicy, *, scoped: bool
) -> list[Guard]:
    """``empty_desired``, ``max_deletes`` and ``max_delete_ratio``, in that order.

    ``desired`` counts desired keys (held ones included), ``deletes`` deletes + expires.
    ``scoped``: the two whole-set guards report themselves not evaluated."""
    override = policy.allow_mass_delete
    held = (
        "deletes will be applied (overridden)"
        if override
        else f"deletes will not be applied (override: {OVERRIDE_FLAG})"
    )
    return [
        _empty_desired(desired, owned, held, override, scoped=scoped),
        _max_deletes(deletes, policy, held),
        _max_delete_ratio(owned, deletes, policy, held, scoped=scoped),
    ]


def _empty_desired(desired: int, owned: int, held: str, override: bool, *, scoped: bool) -> Guard:
    empty = desired == 0 and owned > 0 and not scoped
    if empty:
        message = f"nothing is desired but {owned:,} owned indicators exist; {held}"
    else:
        message = _NOT_EVALUATED if scoped else f"{desired:,} desired, {owned:,} owned"
    return Guard("empty_desired", empty, empty and not override, 0, desired, message)


def _max_deletes(deletes: int, policy: PlanPolicy, held: str) -> Guard:
    too_many = deletes > policy.max_deletes
    verdict = "exceed" if too_many else "within"
    message = f"{deletes:,} deletes {verdict} max_deletes {policy.max_deletes:,}"
    if too_many:
        message += f"; {held}"
    return Guard(
        "max_deletes",
        too_many,
        too_many and not policy.allow_mass_delete,
        policy.max_deletes,
        deletes,
        message,
    )


def _max_delete_ratio(
    owned: int, deletes: int, policy: PlanPolicy, held: str, *, scoped: bool
) -> Guard:
    ratio = deletes / owned if owned else 0.0
    too_large = (
        not scoped and deletes >= policy.ratio_min_deletes and ratio > policy.max_delete_ratio
    )
    share = f"{deletes:,} deletes are {ratio:.0%} of {owned:,} owned"
    if too_large:
        message = f"{share}, above max_delete_ratio {policy.max_delete_ratio:.0%}; {held}"
    else:
        limit_text = f"{policy.max_delete_ratio:.0%} from {policy.ratio_min_deletes} deletes"
        message = _NOT_EVALUATED if scoped else f"{share} (limit {limit_text})"
    return Guard(
        "max_delete_ratio",
        too_large,
        too_large and not policy.allow_mass_delete,
        policy.max_delete_ratio,
        round(ratio, 4),
        message,
    )
