"""Retries: 429 storms wait exactly Retry-After, 5xx and dropped connections back off, random
faults converge, and exhausted retries raise the right error."""

from __future__ import annotations

import pytest

from reconciler.clock import FakeClock
from reconciler.defender import DefenderClient, RetryPolicy
from reconciler.errors import RateLimitError, TransientError
from reconciler.sandbox.defender import DefenderEmulator


def test_429_storm_waits_retry_after_each_time(
    emu: DefenderEmulator, clock: FakeClock, client: DefenderClient
) -> None:
    emu.add_indicator(indicatorValue="a.example", indicatorType="DomainName")
    emu.force_responses("list", [429, 429, 429, 429], retry_after=30)
    rows = client.list_indicators()
    assert [r["indicatorValue"] for r in rows] == ["a.example"]
    assert clock.slept == [30, 30, 30, 30]
    assert client.calls[("list", 429)] == 4
    assert client.calls[("list", 200)] == 1


def test_retry_after_is_capped(emu: DefenderEmulator, clock: FakeClock, make_client) -> None:
    client = make_client(retry=RetryPolicy(max_retry_after=5.0))
    emu.force_responses("list", [429], retry_after=3600)
    client.list_indicators()
    assert clock.slept == [5.0]


def test_503_and_dropped_connections_converge(
    emu: DefenderEmulator, clock: FakeClock, client: DefenderClient, make_body
) -> None:
    emu.force_responses("import", [503, 0, 503])
    results = client.import_indicators([make_body(1), make_body(2)])
    assert all(r.ok for r in results)
    assert len(emu.indicators()) == 2
    # Exponential backoff 0.5, 1, 2 s with ±20 % jitter.
    assert len(clock.slept) == 3
    for slept, base in zip(clock.slept, [0.5, 1.0, 2.0], strict=True):
        assert base * 0.8 <= slept <= base * 1.2
    assert client.calls[("import", 0)] == 1
    assert client.calls[("import", 503)] == 2


def test_backoff_is_capped(emu: DefenderEmulator, clock: FakeClock, make_client) -> None:
    client = make_client(retry=RetryPolicy(max_attempts=10, base=1.0, cap=4.0, jitter=0.0))
    emu.force_responses("list", [500] * 6)
    client.list_indicators()
    assert clock.slept == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_persistent_429_raises_rate_limit_error(emu: DefenderEmulator, make_client) -> None:
    client = make_client(retry=RetryPolicy(max_attempts=3))
    emu.force_responses("list", [429] * 3, retry_after=7)
    with pytest.raises(RateLimitError) as caught:
        client.list_indicators()
    assert caught.value.retry_after == 7
    assert emu.counts()["list"] == 3


def test_persistent_5xx_raises_transient_error(emu: DefenderEmulator, make_client) -> None:
    client = make_client(retry=RetryPolicy(max_attempts=3))
    emu.force_responses("batch_delete", [503, 0, 500])
    with pytest.raises(TransientError) as caught:
        client.batch_delete(["1"])
    assert caught.value.__cause__ is None or caught.value.status == 500


def test_dropped_connections_only_raise_transient_error_chained(
    emu: DefenderEmulator, make_client
) -> None:
    client = make_client(retry=RetryPolicy(max_attempts=2))
    emu.force_responses("list", [0, 0])
    with pytest.raises(TransientError) as caught:
        client.list_indicators()
    assert caught.value.__cause__ is not None  # the httpx error, chained


def test_random_faults_converge(emu: DefenderEmulator, client: DefenderClient, make_body) -> None:
    emu.set_faults(p429=0.15, p500=0.1, p503=0.1, p_drop=0.05, retry_after=1)
    bodies = [make_body(i) for i in range(1200)]
    results = client.import_indicators(bodies)
    assert all(r.ok for r in results)
    listed = client.list_indicators(page_size=500)
    assert len(listed) == 1200
    deleted = client.batch_delete([r["id"] for r in listed])
    assert all(d.ok for d in deleted)
    emu.set_faults()
    assert emu.indicators() == []
    faults = sum(n for (_, status), n in client.calls.items() if status == 0 or status >= 429)
    assert faults > 0  # the faults really happened
