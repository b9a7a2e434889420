"""The controller under leader election, with a fake ``Leadership``: followers do nothing and
say so, a new term reconciles at once and follows the stream, the write guard stops a run
between and before write calls, shutdown hands the lease back only when nothing is written."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.controller import Controller
from reconciler.metrics import Metrics
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine
from tests.e2e.support import TODAY, settings_for


class FakeLeadership:
    def __init__(self, leading: bool = False) -> None:
        self.leading = leading
        self.started: Callable[[], None] | None = None
        self.stopped: Callable[[], None] | None = None
        self.stop_calls: list[bool] = []

    @property
    def identity(self) -> str:
        return "pod-a_1234"

    def is_leader(self) -> bool:
        return self.leading

    def alive(self) -> bool:
        return True

    def follower_status(self) -> tuple[bool, str]:
        return True, "following (leader: pod-b_5678)"

    def start(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        self.started, self.stopped = on_started, on_stopped

    def stop(self, *, release: bool, timeout: float = 5.0) -> None:
        self.stop_calls.append(release)


class FakeConsumer:
    def __init__(self) -> None:
        self.running = False
        self.stopped = 0

    def start(self) -> None:
        self.running = True

    def stop(self, timeout: float = 10.0) -> None:
        self.running = False
        self.stopped += 1


@pytest.fixture
def servers() -> Iterator[tuple[DefenderEmulator, OpenCTIEmulator]]:
    with DefenderEmulator(rate_limits=False) as defender, OpenCTIEmulator() as opencti:
        opencti.load(generate_indicators(1500, seed=5, now=TODAY))
        yield defender, opencti


def sample(metrics: Metrics, name: str) -> float:
    return float(metrics.registry.get_sample_value(name, {}) or 0.0)


def takeovers(metrics: Metrics) -> float:
    labels = {"trigger": "takeover", "result": "success"}
    return float(metrics.registry.get_sample_value("reconciler_reconcile_runs_total", labels) or 0)


def test_follower_does_not_reconcile_and_reports_following(servers: Any) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    leadership, metrics = FakeLeadership(leading=False), Metrics()
    with open_engine(settings) as engine:
        controller = Controller(
            controller_options(settings), engine=engine, metrics=metrics, leadership=leadership
        )
        assert controller.full_reconcile("startup") is False
        assert controller.readiness() == (True, "following (leader: pod-b_5678)")
    assert defender.requests == []  # not even a read
    assert sample(metrics, "reconciler_leader") == 0


def test_new_term_reconciles_then_follows_the_stream(servers: Any) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    leadership, metrics, consumers = FakeLeadership(), Metrics(), []

    def factory() -> FakeConsumer:
        consumers.append(FakeConsumer())
        return consumers[-1]

    with open_engine(settings) as engine:
        controller = Controller(
            controller_options(settings), engine=engine, metrics=metrics, leadership=leadership
        )
        controller.consumer_factory = factory
        controller.start()
        try:
            assert leadership.started is not None and leadership.stopped is not None
            assert consumers == []  # a follower does not follow the stream
            leadership.leading = True
            leadership.started()
            assert [c.running for c in consumers] == [True]
            assert sample(metrics, "reconciler_leader") == 1
            # The new term starts with a full reconcile of its own (a scheduler job, now).
            deadline = time.monotonic() + 30
            while takeovers(metrics) < 1:
                assert time.monotonic() < deadline, "no takeover run"
                time.sleep(0.02)
            assert controller.readiness() == (True, "ok")

            leadership.leading = False
            leadership.stopped()
            assert controller.consumer is None
            assert sample(metrics, "reconciler_leader") == 0
            assert controller.readiness()[1].startswith("following")
        finally:
            controller.shutdown()
    assert [c.stopped for c in consumers] == [1]
    assert leadership.stop_calls == [True]


def test_losing_the_lease_mid_apply_stops_before_the_next_write(servers: Any) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    leadership, metrics = FakeLeadership(leading=True), Metrics()

    def lose_lease(endpoint: str, method: str, path: str) -> None:
        if endpoint == "import":
            leadership.leading = False

    defender.on_request(lose_lease)
    with open_engine(settings) as engine:
        controller = Controller(
            controller_options(settings), engine=engine, metrics=metrics, leadership=leadership
        )
        assert controller.full_reconcile("startup") is False
    # 1,500 indicators need several import calls; only the first one went out.
    assert defender.counts()["import"] == 1
    value = metrics.registry.get_sample_value(
        "reconciler_reconcile_runs_total", {"trigger": "startup", "result": "abandoned"}
    )
    assert value == 1


def test_a_lease_lost_during_the_read_writes_nothing(servers: Any) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    leadership = FakeLeadership(leading=True)

    def lose_lease(endpoint: str, method: str, path: str) -> None:
        if endpoint == "list":
            leadership.leading = False

    defender.on_request(lose_lease)
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine, leadership=leadership)
        assert controller.full_reconcile("startup") is False
    assert defender.counts().get("import", 0) == 0  # the guard is asked before the first write


def test_stream_events_of_a_follower_are_dropped(servers: Any) -> None:
    from reconciler.opencti.stream import STIX_EXT_OCTI, StreamEvent

    defender, opencti = servers
    settings = settings_for(defender, opencti)
    record = opencti.create_indicator(pattern="[domain-name:value = 'x.badhost.net']", score=90)
    data = {"type": "indicator", "extensions": {STIX_EXT_OCTI: {"id": record["id"]}}}
    event = StreamEvent(id="1-0", event="create", data=data, envelope={"data": data})
    assert event.opencti_ids == (record["id"],)
    with open_engine(settings) as engine:
        controller = Controller(
            controller_options(settings), engine=engine, leadership=FakeLeadership(False)
        )
        controller.handle_events([event])
    assert defender.requests == []


def test_without_leadership_the_process_is_the_writer(servers: Any) -> None:
    defender, opencti = servers
    settings = settings_for(defender, opencti)
    metrics = Metrics()
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine, metrics=metrics)
        assert controller.full_reconcile("startup") is True
    assert sample(metrics, "reconciler_leader") == 1
