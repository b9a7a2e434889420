"""apply_plan: order, batching, guards, per-item failures, dry run — against a recording
in-memory Defender (apply's seam is a two-method writer; the HTTP client is tested elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.apply import apply_plan
from reconciler.errors import AuthError, TransientError
from reconciler.plan import ChangeKind, PlanPolicy, build_plan
from tests.plan.factories import as_map, desired, owned


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str | None = None
    id: str = ""


@dataclass
class Recorder:
    """Records calls in order; ``reject`` values fail on import; ``fail_deletes`` raises."""

    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)
    #: value -> the id an import answers with (default: a new id per value).
    answer_ids: dict[str, str] = field(default_factory=dict)
    fail_imports: Exception | None = None
    fail_deletes: Exception | None = None

    def import_indicators(self, bodies: Sequence[dict[str, Any]]) -> list[Outcome]:
        self.calls.append(("import", [b["indicatorValue"] for b in bodies]))
        if self.fail_imports:
            raise self.fail_imports
        return [
            Outcome(
                b["indicatorValue"] not in self.reject,
                "InvalidInput: no",
                self.answer_ids.get(b["indicatorValue"], f"new-{b['indicatorValue']}"),
            )
            for b in bodies
        ]

    def batch_delete(self, ids: Sequence[str]) -> list[Outcome]:
        self.calls.append(("delete", list(ids)))
        if self.fail_deletes:
            raise self.fail_deletes
        return [Outcome(True, None, i) for i in ids]


def _plan(n_create: int = 0, *, replace: bool = False, deletes: int = 0, **policy: Any) -> Any:
    want = [desired(f"198.51.100.{i}") for i in range(n_create)]
    have = []
    if replace:
        d = desired("203.0.113.9", action="Block")
        want.append(d)
        have.append(owned("900", d, action="Audit"))
    for i in range(deletes):
        have.append(owned(str(1000 + i), desired(f"192.0.2.{i}")))
    return build_plan(as_map(*want), have, policy=PlanPolicy(**policy))


def test_deletes_first_then_imports_then_replaced_old_ids() -> None:
    rec = Recorder()
    result = apply_plan(_plan(2, replace=True, deletes=1), rec)
    assert [c[0] for c in rec.calls] == ["delete", "import", "delete"]
    assert rec.calls[0][1] == ["1000"]
    assert rec.calls[2][1] == ["900"], "the old id goes only after its replacement landed"
    assert result.applied == {"create": 2, "replace": 1, "delete": 1}
    assert result.ok


@pytest.mark.parametrize(
    ("answer", "why"),
    [("900", "upserted on type + value: the old row was updated in place"), ("", "no id")],
    ids=["same-id", "no-id"],
)
def test_a_replace_never_deletes_what_the_import_may_have_written(answer: str, why: str) -> None:
    rec = Recorder(answer_ids={"203.0.113.9": answer})
    result = apply_plan(_plan(1, replace=True), rec)
    assert [c[0] for c in rec.calls] == ["import"], why
    assert result.applied == {"create": 1, "replace": 1}
    assert result.ok


def test_an_id_another_import_answered_with_is_never_deleted() -> None:
    """Defender matched a create of this run to the old row: that row now holds the create."""
    rec = Recorder(answer_ids={"198.51.100.0": "900"})
    result = apply_plan(_plan(1, replace=True), rec)
    assert [c[0] for c in rec.calls] == ["import"]
    assert result.ok


def test_batches_of_500() -> None:
    rec = Recorder()
    result = apply_plan(_plan(1200), rec, batch_size=500)
    assert [len(c[1]) for c in rec.calls] == [500, 500, 200]
    assert result.applied["create"] == 1200


def test_replacement_rejected_keeps_old_indicator() -> None:
    rec = Recorder(reject={"203.0.113.9"})
    result = apply_plan(_plan(0, replace=True), rec)
    assert [c[0] for c in rec.calls] == ["import"]
    assert [f.change.kind for f in result.failures] == [ChangeKind.REPLACE]
    assert not result.ok


def test_per_item_failures_do_not_stop_the_rest() -> None:
    rec = Recorder(reject={"198.51.100.1"})
    result = apply_plan(_plan(3), rec)
    assert result.applied["create"] == 2
    assert len(result.failures) == 1 and "InvalidInput" in result.failures[0].reason


def test_guard_blocks_deletes_unless_overridden() -> None:
    plan = _plan(0, deletes=20, max_deletes=5)
    assert plan.deletes_blocked
    rec = Recorder()
    result = apply_plan(plan, rec)
    assert rec.calls == [] and result.blocked_deletes == 20
    result = apply_plan(plan, rec, allow_mass_delete=True)
    assert result.applied["delete"] == 20


def test_dry_run_writes_nothing() -> None:
    rec = Recorder()
    result = apply_plan(_plan(3, deletes=1), rec, dry_run=True)
    assert rec.calls == []
    assert result.applied == {"create": 3, "delete": 1}
    assert result.summary().startswith("Would apply")


@pytest.mark.parametrize(
    ("error", "aborted"),
    [(TransientError("503 after retries"), False), (AuthError("token refused"), True)],
    ids=["transient-batch-fails-rest-continues", "auth-error-aborts"],
)
def test_batch_errors(error: Exception, aborted: bool) -> None:
    rec = Recorder(fail_deletes=error)
    result = apply_plan(_plan(2, deletes=1), rec)
    if aborted:
        assert result.aborted and [c[0] for c in rec.calls] == ["delete"]
    else:
        assert result.applied["create"] == 2
        assert [f.step for f in result.failures] == ["delete"]


def test_on_batch_can_abandon_between_calls() -> None:
    rec = Recorder()

    class Stop(Exception):
        pass

    def on_batch(step: str, n: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        apply_plan(_plan(600), rec, on_batch=on_batch)
    assert len(rec.calls) == 1
