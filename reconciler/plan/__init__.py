"""The plan: what must change in Defender so it equals what OpenCTI says, as plain data.

``build_plan`` is a pure function of its arguments (desired indicators, the owned Defender
indicators, mapping skips, the count of indicators other tools hold, a policy). It reads no
clock, does no I/O and prints nothing; the same inputs in any order give the same ``Plan``.
Renderers (``report``) display a plan, ``apply`` executes it; neither re-diffs.

The package, by seam (each module's docstring holds its part of the spec):

- ``document``     the plan as data: change kinds, reasons, ``Change``, ``Guard``, ``Quota``,
  ``Plan`` and its versioned JSON form;
- ``policy``       ``PlanPolicy``, the planner's knobs;
- ``planner``      ``build_plan``, one function per phase; the change kinds, the
  held-by-other-application rule and the quota ranking;
- ``foreign``      the identity of another application's indicator;
- ``changes``      filling in one change record (bodies, differing fields);
- ``guards``       the delete guards and their messages (``--allow-mass-delete``);
- ``fingerprint``  the order-independent fingerprints of both sides;
- ``churn``        the churn guard: a key planned the same way run after run is held back.

Every module is pure: none imports an HTTP client, the scheduler or an adapter. This module
only re-exports; callers import from ``reconciler.plan``.
"""

from __future__ import annotations

from reconciler.model import IGNORABLE_FIELDS
from reconciler.plan.churn import ChurnState, hold_churning
from reconciler.plan.document import (
    FORMAT_VERSION,
    KIND_ORDER,
    OVERRIDE_FLAG,
    Change,
    ChangeKind,
    Guard,
    Plan,
    Quota,
    Reason,
)
from reconciler.plan.fingerprint import fingerprint_desired, fingerprint_owned
from reconciler.plan.foreign import ForeignIdentity, foreign_identity
from reconciler.plan.planner import build_plan
from reconciler.plan.policy import PlanPolicy

__all__ = [
    "FORMAT_VERSION",
    "IGNORABLE_FIELDS",
    "KIND_ORDER",
    "OVERRIDE_FLAG",
    "Change",
    "ChangeKind",
    "ChurnState",
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
    "hold_churning",
]
