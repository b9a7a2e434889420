"""Deployment statuses from a run's own data: table-driven over the outcomes a key can have."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from reconciler.apply import ApplyResult, ItemFailure
from reconciler.model import DefenderIndicator, DesiredIndicator, Skipped, SkipReason
from reconciler.plan import ChangeKind, Plan, PlanPolicy, build_plan
from reconciler.writeback import Deployment, Refusal, Status, deployment_statuses
from tests.plan.factories import desired, owned

IP = "203.0.113.45"
OID = f"indicator--{IP}"


def _dep(defender_id: str, d: DesiredIndicator, action: str = "Block") -> Deployment:
    return Deployment(
        defender_id, d.indicator_type.value, d.indicator_value, action, "2026-04-01T00:00:00Z"
    )


@dataclass
class Case:
    name: str
    want: Sequence[DesiredIndicator]
    have: Sequence[DefenderIndicator]
    expect: dict[str, Status]
    quota: int = 15000
    held: bool = False
    apply: str = "ok"  # ok | refused | none
    skipped: Sequence[Skipped] = ()


def _run(case: Case) -> tuple[dict[str, Status], frozenset[str]]:
    plan: Plan = build_plan(
        list(case.want),
        list(case.have),
        skipped=case.skipped,
        policy=PlanPolicy(quota=case.quota),
    )
    result: ApplyResult | None = None
    if case.apply != "none" and not plan.is_empty:
        result = ApplyResult()
        for change in plan.changes:
            if change.kind in (ChangeKind.CREATE, ChangeKind.UPDATE, ChangeKind.REPLACE):
                if case.apply == "refused":
                    result.failures.append(ItemFailure(change, "import", "InvalidInput"))
                else:
                    result.written.append((change, change.defender_id or "new-1"))
            if change.kind in (ChangeKind.DELETE, ChangeKind.EXPIRE) and change.defender_id:
                result.removed.add(change.defender_id)
    return deployment_statuses(desired=case.want, owned=case.have, plan=plan, result=result)


d_ip = desired(IP)
CASES = [
    Case("created", [d_ip], [], {OID: Status((_dep("new-1", d_ip),))}),
    Case("already deployed", [d_ip], [owned("7", d_ip)], {OID: Status((_dep("7", d_ip),))}),
    Case(
        "updated in place keeps its id",
        [d_ip],
        [owned("7", d_ip, severity="Low")],
        {OID: Status((_dep("7", d_ip),))},
    ),
    Case(
        "refused by Defender",
        [d_ip],
        [],
        {OID: Status((), (Refusal("rejected", "Defender refused it: InvalidInput", IP),))},
        apply="refused",
    ),
    Case(
        "over the quota",
        [d_ip],
        [],
        {OID: Status((), (Refusal("quota", "over the free room of 0 (score 50)", IP),))},
        quota=0,
    ),
    Case(
        "no longer desired: removed, no status",
        [],
        [owned("7", d_ip)],
        {OID: Status()},
    ),
    Case(
        "mapping skip without a key",
        [],
        [],
        {"indicator--x": Status((), (Refusal("unsupported_type", "email", None),))},
        skipped=[
            Skipped(opencti_id="indicator--x", reason=SkipReason.UNSUPPORTED_TYPE, detail="email")
        ],
    ),
    Case(
        "private ip",
        [],
        [],
        {"indicator--p": Status((), (Refusal("private_ip", "10.0.0.1", None),))},
        skipped=[
            Skipped(opencti_id="indicator--p", reason=SkipReason.PRIVATE_IP, detail="10.0.0.1")
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_status_of_each_outcome(case: Case) -> None:
    statuses, _ = _run(case)
    assert statuses == case.expect


def test_live_ids_are_what_defender_holds_after_the_run() -> None:
    d_other = desired("198.51.100.7")
    _, live = _run(
        Case("x", [d_ip, d_other], [owned("7", d_ip), owned("9", desired("192.0.2.1"))], {})
    )
    assert live == {"7", "new-1"}


def test_merged_indicators_share_the_deployment() -> None:
    merged = desired(IP, opencti_ids=("indicator--a", "indicator--b"))
    statuses, _ = _run(Case("x", [merged], [owned("7", merged)], {}))
    assert statuses["indicator--a"] == statuses["indicator--b"] == Status((_dep("7", merged),))


def test_only_restricts_to_the_ids_asked() -> None:
    plan = build_plan([d_ip], [])
    statuses, _ = deployment_statuses(
        desired=[d_ip], owned=[], plan=plan, result=None, only=["other"]
    )
    assert statuses == {}


def test_without_apply_a_planned_create_is_pending() -> None:
    plan = build_plan([d_ip], [])
    statuses, _ = deployment_statuses(desired=[d_ip], owned=[], plan=plan, result=None)
    assert statuses[OID] == Status((), (Refusal("pending", "not written to Defender yet", IP),))
