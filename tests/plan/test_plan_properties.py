"""Property: applying a plan converges. Whatever Defender holds (duplicates, other actions,
stale fields, leftovers), applying the plan to an in-memory Defender that upserts on
(type, value, action) leaves nothing to do: the next plan writes nothing."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.model import DefenderIndicator, DesiredIndicator, IndicatorKey
from reconciler.plan import ChangeKind, Plan, PlanPolicy, build_plan
from tests.plan.factories import desired, owned

VALUES = [f"192.0.2.{i}" for i in range(8)]
ACTIONS = ["Block", "Audit", "Warn"]

desired_st = st.builds(
    lambda value, action, severity, score: desired(
        value, action=action, severity=severity, score=score
    ),
    st.sampled_from(VALUES),
    st.sampled_from(ACTIONS),
    st.sampled_from(["Low", "High"]),
    st.integers(0, 100),
)
owned_st = st.tuples(
    st.sampled_from(VALUES),
    st.sampled_from(ACTIONS),
    st.sampled_from(["Low", "High"]),
    st.sampled_from(["OpenCTI: x", None]),
)


def apply_in_memory(plan: Plan, store: dict[str, DefenderIndicator], ids: Any) -> None:
    """What Defender does with the plan: deletes by id, import upserts on type+value+action."""
    for c in plan.changes:
        if c.kind in (ChangeKind.DELETE, ChangeKind.EXPIRE):
            assert c.defender_id is not None
            store.pop(c.defender_id, None)
    for c in plan.changes:
        if c.kind not in (ChangeKind.CREATE, ChangeKind.UPDATE, ChangeKind.REPLACE):
            continue
        assert c.after is not None
        body = c.after
        triple = (body["indicatorType"], body["indicatorValue"], body["action"])
        same = [
            i
            for i, ind in store.items()
            if (ind.indicator_type.value, ind.indicator_value, ind.action.value) == triple
        ]
        new_id = same[0] if same else str(next(ids))
        store[new_id] = DefenderIndicator.from_raw({**body, "id": new_id})
        if c.kind is ChangeKind.REPLACE:
            assert c.defender_id is not None
            store.pop(c.defender_id, None)


@settings(max_examples=150, deadline=None)
@given(
    wanted=st.lists(desired_st, max_size=6),
    existing=st.lists(owned_st, max_size=8),
    quota=st.integers(0, 8),
)
def test_apply_then_replan_is_empty(
    wanted: list[DesiredIndicator], existing: list[tuple[str, str, str, str | None]], quota: int
) -> None:
    want: dict[IndicatorKey, DesiredIndicator] = {d.key: d for d in wanted}
    store = {
        str(i + 1): owned(str(i + 1), desired(v, action=a), severity=s, title=t)
        for i, (v, a, s, t) in enumerate(existing)
    }
    policy = PlanPolicy(quota=quota, allow_mass_delete=True)
    first = build_plan(want, store.values(), policy=policy)
    apply_in_memory(first, store, itertools.count(1000))
    second = build_plan(want, store.values(), policy=policy)
    assert second.is_empty, [c for c in second.changes if c.kind is not ChangeKind.SKIP]
    assert second.summary["skip"] == first.summary["skip"]
    assert len(store) == min(len(want), quota)
    assert first.quota.used_after == len(store)


def test_json_identical_across_hash_seeds() -> None:
    # Sets iterate in a per-process order; nothing of it may leak into the plan.
    code = (
        "from reconciler.plan import PlanPolicy, build_plan\n"
        "from reconciler.report import render_json\n"
        "from tests.plan.factories import as_map, desired, owned\n"
        "d = desired(recommended_actions=None, severity='High')\n"
        "o = owned('1', d, severity='Low', recommendedActions='x', educateUrl='https://e.test')\n"
        "p = PlanPolicy(ignore_fields=('educateUrl', 'recommendedActions', 'title'))\n"
        "print(render_json(build_plan(as_map(d), [o], policy=p)))\n"
    )
    root = Path(__file__).resolve().parents[2]
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        outputs.add(run.stdout)
    assert len(outputs) == 1
