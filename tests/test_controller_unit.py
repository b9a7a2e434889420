"""Controller pieces in-process: dry run, readiness, metrics, a failing source, bad events."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.controller import Controller
from reconciler.errors import SourceError
from reconciler.metrics import Metrics
from reconciler.opencti.stream import StreamEvent
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine
from tests.e2e.support import TODAY, settings_for


@pytest.fixture
def servers() -> Iterator[tuple[DefenderEmulator, OpenCTIEmulator]]:
    with DefenderEmulator() as defender, OpenCTIEmulator() as opencti:
        opencti.load(generate_indicators(120, seed=4, now=TODAY))
        yield defender, opencti


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


def test_dry_run_plans_and_counts_but_writes_nothing(servers: Any) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti, **{"reconciler.dry_run": True})
    metrics = Metrics()
    with open_engine(settings, on_call=metrics.on_defender_call) as engine:
        controller = Controller(controller_options(settings), engine=engine, metrics=metrics)
        assert controller.readiness()[0] is False
        assert controller.full_reconcile("startup") is True
        assert controller.readiness() == (True, "ok")
    assert defender.counts().get("import", 0) == 0 and defender.indicators() == []
    assert sample(metrics, "reconciler_planned_changes_total", action="create") > 50
    assert sample(metrics, "reconciler_applied_changes_total", action="create") == 0
    assert sample(metrics, "reconciler_dry_run") == 1
    assert (
        sample(metrics, "reconciler_defender_api_calls_total", endpoint="list", status="200") >= 1
    )


def test_failed_full_run_marks_not_ready_and_never_raises(servers: Any) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    metrics = Metrics()
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine, metrics=metrics)
        assert controller.full_reconcile("startup") is True
        assert controller.readiness()[0] is True

        class Broken:
            def listing_filters(self) -> dict[str, Any]:
                return {}

            def iter_by_priority(self, *_: Any, **__: Any) -> list[Any]:
                raise SourceError("OpenCTI listing failed on page 2")

        engine.source = Broken()
        assert controller.full_reconcile("schedule") is False
        ready, why = controller.readiness()
        assert not ready and "failed" in why
    assert (
        sample(metrics, "reconciler_reconcile_runs_total", trigger="schedule", result="error") == 1
    )


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"type": "indicator"},
        {"type": "indicator", "pattern": "[ipv4-addr:value = '8.8.8.8'"},
        {"type": "indicator", "id": "indicator--x", "pattern": None, "extensions": []},
        {"type": "malware", "name": "x"},
        {"type": "indicator", "extensions": {"x": 1}, "pattern": "' or 1 eq 1"},
    ],
    ids=["empty", "no-id", "broken-pattern", "wrong-types", "not-indicator", "hostile"],
)
def test_bad_stream_events_never_raise(servers: Any, data: dict[str, Any]) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        assert controller.full_reconcile("startup") is True
        before = len(defender.indicators())
        event = StreamEvent(id="1-0", event="create", data=data, envelope={"data": data})
        controller.handle_events([event])
        controller.handle_events([StreamEvent("2-0", "delete", data, {"data": data})])
        assert len(defender.indicators()) == before
        assert all(r.status < 400 for r in defender.requests)


def test_stream_event_for_a_key_another_application_holds_is_not_imported(servers: Any) -> None:
    """The scoped (stream) plan sees the other application's row in its by-value read."""
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        assert controller.full_reconcile("startup") is True
        theirs = defender.add_indicator(
            indicatorValue="held.badhost.net",
            indicatorType="DomainName",
            action="Block",
            application="Portal",
            title="analyst's own block",
        )
        record = opencti.create_indicator(
            pattern="[domain-name:value = 'held.badhost.net']", score=90
        )
        data = OpenCTIEmulator.stix_object(record)
        imports = defender.counts().get("import", 0)
        controller.handle_events([StreamEvent("9-0", "create", data, {"data": data})])
        assert defender.counts().get("import", 0) == imports
        assert defender.get(theirs["id"]) == theirs


def test_readyz_over_http_flips_with_the_full_reconciles(servers: Any) -> None:
    """503 before the first successful full reconcile, 200 after it, 503 after a failed one;
    /healthz stays 200 throughout (the process is alive)."""
    defender, opencti = servers
    settings = settings_for(defender, opencti)

    def get(port: int, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        controller.scheduler.start()  # /healthz reports the scheduler
        try:
            port = controller.start_http(host="127.0.0.1", port=0)
            assert (get(port, "/readyz"), get(port, "/healthz")) == (503, 200)
            assert controller.full_reconcile("startup") is True
            assert get(port, "/readyz") == 200
            opencti.fail_page(1)
            assert controller.full_reconcile("schedule") is False
            assert (get(port, "/readyz"), get(port, "/healthz")) == (503, 200)
        finally:
            controller.http.stop()
            controller.scheduler.shutdown(wait=False)
