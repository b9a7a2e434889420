"""The churn guard: the same change planned in consecutive full runs is held back."""

from __future__ import annotations

from reconciler.plan import ChangeKind, ChurnState, PlanPolicy, build_plan, hold_churning
from tests.plan.factories import as_map, desired, owned

D_A = desired("a.example", "DomainName")
D_B = desired("b.example", "DomainName")


def runs(plans: list[object], threshold: int = 3) -> list[list[tuple[str, str, str]]]:
    """Feed plans through the guard as consecutive full runs; each run's (kind, value, reason)."""
    state = ChurnState()
    out = []
    for plan in plans:
        held, state = hold_churning(plan, state, threshold)  # type: ignore[arg-type]
        out.append([(c.kind.value, c.key.value if c.key else "", c.reason) for c in held.changes])
    return out


def test_the_same_update_three_runs_in_a_row_is_held_on_the_third() -> None:
    drifted = owned("1", D_A, title="what Defender keeps answering")
    plan = build_plan(as_map(D_A), [drifted])
    seen = runs([plan, plan, plan, plan])
    assert seen[0] == seen[1] == [("update", "a.example", "fields_changed")]
    assert seen[2] == seen[3] == [("skip", "a.example", "unconverged")]


def test_a_different_change_starts_the_count_again() -> None:
    first = build_plan(as_map(D_A), [owned("1", D_A, title="x")])
    other = build_plan(as_map(D_A), [owned("1", D_A, title="y")])
    assert runs([first, first, other, first])[-1] == [("update", "a.example", "fields_changed")]


def test_a_create_that_never_appears_is_held_and_the_others_go_on() -> None:
    plan = build_plan(as_map(D_A, D_B), [])
    last = runs([plan, plan, plan])[-1]
    assert last == [("skip", "a.example", "unconverged"), ("skip", "b.example", "unconverged")]
    # a.example lands in the second run; b.example's create keeps not sticking.
    landed = build_plan(as_map(D_A, D_B), [owned("1", D_A)])
    assert runs([plan, landed, landed]) == [
        [("create", "a.example", "not_in_defender"), ("create", "b.example", "not_in_defender")],
        [("create", "b.example", "not_in_defender")],
        [("skip", "b.example", "unconverged")],
    ]


def test_guard_off_and_deletes_held_by_a_mass_delete_guard_are_not_counted() -> None:
    plan = build_plan(as_map(D_A), [owned("1", D_A, title="x")])
    assert runs([plan] * 4, threshold=0)[-1] == [("update", "a.example", "fields_changed")]
    stale = [owned(str(i), desired(f"{i}.stale.example", "DomainName")) for i in range(20)]
    blocked = build_plan({}, stale, policy=PlanPolicy())
    assert blocked.deletes_blocked  # empty_desired: apply will not delete them
    assert {c[2] for c in runs([blocked] * 4)[-1]} == {"not_in_opencti"}


def test_held_changes_keep_their_counts_consistent() -> None:
    plan = build_plan(as_map(D_A), [owned("1", D_A, title="x"), owned("2", D_A)])
    state = ChurnState()
    for _ in range(3):
        held, state = hold_churning(plan, state, 3)
    assert state.held == 1
    assert held.summary["skip"] == 1 and held.summary["update"] == 0
    assert held.summary["delete"] == 0  # the duplicate delete of the same key is held too
    assert held.by_kind(ChangeKind.SKIP)[0].detail.startswith("the same delete, update")
