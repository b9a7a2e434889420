"""``GraphAlerts`` against the Defender emulator's Graph endpoint, under each answer Microsoft
does not document: detectionSource in $filter accepted or refused, nextLink present or
missing, $top capped silently or refused, a $skip limit, throttling. Same alerts every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.clock import FakeClock
from reconciler.defender import BearerAuth
from reconciler.defender.graph import GraphAlerts
from reconciler.errors import AuthError
from reconciler.sandbox.defender import DefenderEmulator
from tests.defender.conftest import provider_for

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

VARIANTS: dict[str, dict[str, Any]] = {
    "documented": {},
    "detectionSource refused": {"graph_detection_source_filter": "refused"},
    "no nextLink": {"graph_next_link": "missing"},
    "top capped": {"graph_max_top": 7},
    "top over max refused": {"graph_max_top": 7, "graph_top_over_max": "error"},
    "skip limited": {"graph_max_skip": 20, "graph_next_link": "missing"},
    "everything at once": {
        "graph_detection_source_filter": "refused",
        "graph_next_link": "missing",
        "graph_max_top": 7,
    },
}


def _alerts(server: DefenderEmulator, clock: FakeClock, **kw: Any) -> GraphAlerts:
    provider = provider_for(server, clock=clock, scope="https://graph.microsoft.com/.default")
    kw.setdefault("page_size", 10)
    return GraphAlerts(
        server.graph_url, BearerAuth(provider), verify=server.ca_file, clock=clock, **kw
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def _raise(server: DefenderEmulator) -> set[str]:
    ids = set()
    for n in range(45):
        at = T0 - timedelta(minutes=50 - n)
        ids.add(server.raise_hit("IpAddress", f"203.0.113.{n}", at=at)["id"])
    server.raise_hit(
        "IpAddress", "198.51.100.1", at=T0 - timedelta(minutes=5), detection_source="antivirus"
    )
    server.raise_hit("IpAddress", "198.51.100.2", at=T0 - timedelta(days=3))
    return ids


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_every_custom_indicator_alert_of_the_window_once(variant: str, clock: FakeClock) -> None:
    with DefenderEmulator(clock=clock, seed=0, **VARIANTS[variant]) as server:
        expected = _raise(server)
        graph = _alerts(server, clock, page_size=7 if "top over" in variant else 10)
        try:
            got = [
                a["id"] for a in graph.alerts(T0 - timedelta(hours=1), T0 + timedelta(seconds=1))
            ]
        finally:
            graph.close()
    assert sorted(got) == sorted(expected)


def test_a_window_larger_than_max_rows_is_read_in_halves(clock: FakeClock) -> None:
    with DefenderEmulator(clock=clock, seed=0) as server:
        expected = _raise(server)
        graph = _alerts(server, clock, max_rows=10)
        got = list(graph.alerts(T0 - timedelta(hours=1), T0 + timedelta(seconds=1)))
        graph.close()
        counts = [r for r in server.requests if r.endpoint == "alerts"]
    assert {a["id"] for a in got} == expected and len(got) == len(expected)
    assert len(counts) > 5


def test_a_token_without_the_permission_names_it(clock: FakeClock) -> None:
    with DefenderEmulator(clock=clock, seed=0, graph_roles=()) as server:
        graph = _alerts(server, clock)
        with pytest.raises(AuthError, match=r"SecurityAlert\.Read\.All"):
            list(graph.alerts(T0 - timedelta(hours=1), T0))
        graph.close()


def test_throttled_calls_wait_and_succeed(clock: FakeClock) -> None:
    with DefenderEmulator(clock=clock, seed=0, graph_rate_limit_per_minute=3) as server:
        expected = _raise(server)
        graph = _alerts(server, clock)
        got = {a["id"] for a in graph.alerts(T0 - timedelta(hours=1), T0 + timedelta(seconds=1))}
        graph.close()
    assert got == expected
    assert graph.budget.waited > 0
