"""The plan line of the log names what a run writes, not only how much."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from loguru import logger

from reconciler import engine
from reconciler.plan import ChangeKind
from tests.plan.factories import golden_plan


@pytest.fixture
def lines() -> Iterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(seen.append, level="INFO", format="{message}")
    yield seen
    logger.remove(sink)


def test_a_plan_that_writes_names_its_first_writes(
    lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = golden_plan()
    writes = [c for c in plan.changes if c.kind is not ChangeKind.SKIP]
    monkeypatch.setattr(engine, "_LOGGED_WRITES", 2)
    engine._log_plan("plan", plan)
    (line,) = lines
    first = writes[0]
    assert first.key is not None
    assert line.startswith("plan: ")
    assert f"{first.kind.value} {first.key.type.value} {first.key.value}" in line
    assert f"and {len(writes) - 2} more" in line
    assert any(c.kind is ChangeKind.SKIP for c in plan.changes)
    assert "; skip " not in line and "(skip " not in line  # skips are not writes


def test_a_plan_that_writes_nothing_is_one_count_line(lines: list[str]) -> None:
    plan = golden_plan()
    quiet = replace(plan, changes=())
    engine._log_plan("plan", quiet)
    assert lines == [f"plan: {quiet.summary['unchanged']} unchanged\n"]
