"""Client-side budgets: sliding windows on a fake clock, penalties, and a burst against the
rate-limited emulator that never meets a 429."""

from __future__ import annotations

import pytest

from reconciler.clock import FakeClock
from reconciler.defender import DEFAULT_LIMITS, RateBudgets, RetryPolicy, Window
from reconciler.errors import RateLimitError
from reconciler.sandbox.defender import DefenderEmulator


def test_calls_within_budget_do_not_wait() -> None:
    clock = FakeClock()
    budgets = RateBudgets(clock=clock)
    for _ in range(30):
        assert budgets.acquire("import") == 0
    assert clock.slept == []


def test_31st_import_in_a_minute_waits_for_the_first_to_leave_the_window() -> None:
    clock = FakeClock()
    budgets = RateBudgets(clock=clock)
    for _ in range(10):
        budgets.acquire("import")
    clock.advance(20)
    for _ in range(20):
        budgets.acquire("import")
    assert budgets.acquire("import") == pytest.approx(40)  # the first ten leave at t+60
    assert clock.slept == [pytest.approx(40)]
    for _ in range(9):
        assert budgets.acquire("import") == 0
    assert budgets.acquire("import") == pytest.approx(20)  # then the 20 sent at t+20


def test_hourly_window_applies_too() -> None:
    clock = FakeClock()
    budgets = RateBudgets({"x": (Window(3, 1.0), Window(5, 100.0))}, clock=clock)
    waits = [budgets.acquire("x") for _ in range(6)]
    assert waits == [0, 0, 0, pytest.approx(1.0), 0, pytest.approx(99.0)]


def test_endpoints_have_separate_budgets() -> None:
    clock = FakeClock()
    budgets = RateBudgets(clock=clock)
    for _ in range(30):
        budgets.acquire("import")
    assert budgets.acquire("batch_delete") == 0
    assert budgets.acquire("unknown-endpoint") == 0


def test_penalty_blocks_one_endpoint_until_it_passes() -> None:
    clock = FakeClock()
    budgets = RateBudgets(clock=clock)
    budgets.penalize("list", 30)
    budgets.penalize("list", 10)  # a shorter penalty does not shorten the block
    assert budgets.blocked_for("list") == 30
    assert budgets.acquire("import") == 0
    assert budgets.acquire("list") == 30
    assert budgets.blocked_for("list") == 0


def test_documented_limits() -> None:
    assert DEFAULT_LIMITS["import"] == (Window(30, 60.0),)
    assert DEFAULT_LIMITS["batch_delete"] == (Window(30, 60.0), Window(1500, 3600.0))
    for name in ("list", "submit", "delete"):
        assert DEFAULT_LIMITS[name] == (Window(100, 60.0), Window(1500, 3600.0))


def test_burst_of_35_imports_never_meets_a_429(clock: FakeClock, connect, make_body) -> None:
    with DefenderEmulator(clock=clock, rate_limits=True) as emu:
        client = connect(emu)
        for i in range(35):
            [result] = client.import_indicators([make_body(i)])
            assert result.ok
        statuses = [r.status for r in emu.requests if r.endpoint == "import"]
        assert statuses == [200] * 35
        assert clock.slept == [pytest.approx(60)]  # one wait, for the 31st call
        assert len(emu.indicators()) == 35


def test_client_without_budgets_does_meet_the_429(clock: FakeClock, connect, make_body) -> None:
    # Control for the test above: the emulator does enforce its limit.
    with DefenderEmulator(clock=clock, rate_limits=True) as emu:
        client = connect(
            emu, budgets=RateBudgets({}, clock=clock), retry=RetryPolicy(max_attempts=1)
        )
        with pytest.raises(RateLimitError):
            for i in range(31):
                client.import_indicators([make_body(i)])
        assert client.calls[("import", 429)] == 1
