"""Chaos: 5,000 indicators through the controller while both sides misbehave.

Defender (emulator) answers 15 % of API calls with 429/500/503, a dropped connection or a stall
longer than the client's timeout (the write then lands late); tokens live 3 s on a clock that
moves with every request; OpenCTI fails a listing page and drops the live stream while
indicators change. Within 5 full reconciles Defender must equal the desired state exactly, and
the request log must show that no indicator of another application was ever written or deleted.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from loguru import logger

from reconciler.clock import FakeClock
from reconciler.controller import Controller
from reconciler.defender.client import RetryPolicy
from reconciler.engine import Engine
from reconciler.errors import TransientError
from reconciler.opencti.source import OpenCTISource
from reconciler.opencti.state import MemoryStore
from reconciler.opencti.stream import StreamConsumer, StreamEvent, StreamTuning
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator, RequestRecord
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import (
    controller_options,
    mapping_policy,
    open_engine,
    ownership,
    plan_policy,
)
from tests.reliability.support import (
    TODAY,
    deleted_ids,
    row_key,
    settings_for,
    short_timeout_client,
    written_keys,
)

N = 5000
# (endpoint, n-th call) that always stall past the client's timeout.
STALLED = {("import", 3), ("import", 12), ("batch_delete", 2), ("token", 4), ("list", 3)}
WRITES = ("import", "batch_delete", "delete", "submit")
TIMEOUT = 0.5  # client HTTP timeout; the stall fault waits longer
STALL = 0.8
FAULTS: dict[str, Any] = {
    "p429": 0.03,
    "p500": 0.03,
    "p503": 0.03,
    "p_drop": 0.03,
    "p_timeout": 0.03,
    "stall": STALL,
}


@pytest.fixture
def world() -> Iterator[tuple[FakeClock, DefenderEmulator, OpenCTIEmulator]]:
    clock = FakeClock(datetime.now(UTC))
    with (
        DefenderEmulator(clock=clock, token_lifetime=3, seed=20261128) as defender,
        OpenCTIEmulator(seed=5) as opencti,
    ):
        opencti.load(generate_indicators(N, seed=77, now=TODAY))
        yield clock, defender, opencti


def _add_foreign_rows(defender: DefenderEmulator, engine: Engine) -> dict[str, dict[str, Any]]:
    """Rows of other applications: some on the very values we deploy (another action: those
    keys are then left to their holder), some unrelated, one with the old connector's tag (not
    adopted here)."""
    desired = list(engine.read_desired().desired.values())
    assert len(desired) > N // 2, "the dataset should deploy most indicators"
    rows = []
    for i, ind in enumerate(desired[:: len(desired) // 40][:40]):
        if ind.indicator_type.value == "CertificateThumbprint":
            continue
        rows.append(
            defender.add_indicator(
                indicatorValue=ind.indicator_value,
                indicatorType=ind.indicator_type.value,
                action="Allowed",
                application="Portal" if i % 2 else "ThirdPartyTI",
                title=f"analyst exception {i}",
            )
        )
    for i in range(20):
        rows.append(
            defender.add_indicator(
                indicatorValue=f"portal-{i}.contoso-intel.net",
                indicatorType="DomainName",
                action="Block",
                application="Portal",
            )
        )
    rows.append(
        defender.add_indicator(
            indicatorValue=desired[0].indicator_value,
            indicatorType=desired[0].indicator_type.value,
            action="Audit",
            application="OpenCTI Microsoft Defender Intel",
            generateAlert=True,
        )
    )
    return {row["id"]: row for row in rows}


def _change_opencti(opencti: OpenCTIEmulator, round_no: int, ids: list[str]) -> None:
    """Creates, action-changing updates, revokes and deletes: stream events and new desired."""
    for i in range(25):
        opencti.create_indicator(
            pattern=f"[domain-name:value = 'chaos-r{round_no}-{i}.badhost.net']",
            score=80 if i % 2 else 40,
        )
    base = round_no * 100
    for j, ident in enumerate(ids[base : base + 30]):
        opencti.update_indicator(ident, score=(10, 45, 90)[j % 3])
    for ident in ids[base + 30 : base + 40]:
        opencti.revoke_indicator(ident)
    for ident in ids[base + 40 : base + 50]:
        opencti.delete_indicator(ident)


def test_chaos_converges_within_five_runs_and_never_touches_other_applications(
    world: tuple[FakeClock, DefenderEmulator, OpenCTIEmulator],
) -> None:
    clock, defender, opencti = world
    settings = settings_for(defender, opencti)
    client = short_timeout_client(defender, clock, timeout=TIMEOUT, seed=3)
    source = OpenCTISource(opencti.url, opencti.token, opencti.stream_id, page_size=1000)
    engine = Engine(
        source=source,
        defender=client,
        mapping_policy=mapping_policy(settings),
        plan_policy=plan_policy(settings),
        ownership=ownership(settings),
        clock=clock,
    )
    controller = Controller(controller_options(settings), engine=engine)
    foreign = _add_foreign_rows(defender, engine)
    foreign_keys = {row_key(r) for r in foreign.values()}
    opencti_ids = [r["id"] for r in opencti.indicators()]

    # Every Defender request moves time 0 to 3.5 s: 3-second tokens expire mid-run, sometimes
    # between the client's freshness check and the server's, so some calls meet a 401 first.
    seen = Counter[str]()
    jumps = random.Random(9)

    def on_request(endpoint: str, method: str, path: str) -> None:
        clock.advance(jumps.uniform(0.0, 3.5))
        seen[endpoint] += 1
        if endpoint == "list" and seen[endpoint] % 7 == 0:
            opencti.disconnect_streams()
        if (endpoint, seen[endpoint]) in STALLED:
            time.sleep(STALL)  # besides the random stalls: these calls surely time out

    defender.on_request(on_request)
    defender.set_faults(**FAULTS, endpoints=["list", "import", "batch_delete", "delete", "token"])
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING", format="{message}")
    stream_writes: list[RequestRecord] = []

    def on_events(events: list[StreamEvent]) -> None:
        mark = len(defender.requests)
        controller.handle_events(events)
        stream_writes.extend(r for r in defender.requests[mark:] if r.endpoint in WRITES)

    head = f"{int(time.time() * 1000)}-0"  # the stream starts at "now": no first-run replay
    consumer = StreamConsumer(
        opencti.url,
        opencti.token,
        opencti.stream_id,
        on_events=on_events,
        state=MemoryStore(head),
        tuning=StreamTuning(batch_window=0.05, batch_max=200, backoff_base=0.05, backoff_cap=0.3),
    )
    consumer.start()
    try:
        # Five full reconciles: 0 and 2 meet a failed OpenCTI page, 1-3 follow OpenCTI
        # changes (1 and 3 after the stream handled them, 2 racing the stream), 4 is plain.
        results = []
        for run in range(5):
            if run in (1, 2, 3):
                _change_opencti(opencti, run, opencti_ids)
                if run != 2:
                    _wait_for_stream(consumer, opencti)
            if run in (0, 2):
                opencti.fail_page(3)
            mark = len(defender.requests)
            results.append(controller.full_reconcile("schedule"))
            if run in (0, 2):
                opencti.clear_failures()
                assert results[-1] is False, "a run with a failed OpenCTI page succeeded"
            if run == 0:  # nothing else runs meanwhile: a partial listing acts on nothing
                assert [r for r in defender.requests[mark:] if r.endpoint in WRITES] == []
        _wait_for_stream(consumer, opencti)
    finally:
        consumer.stop(timeout=10)
        logger.remove(sink)
    time.sleep(STALL + 0.2)  # late (stalled) writes land before the final check
    defender.set_faults()
    defender.on_request(None)
    log = list(defender.requests)
    faults = Counter(r.status for r in log if r.status in (0, 401, 429, 500, 503))

    try:
        plan = engine.plan()
        desired = engine.index.full_state()
        actual = engine.read_actual()
    finally:
        client.close()

    assert results[4], f"the last full reconcile failed: {results}"
    assert plan.is_empty, f"not converged after 5 runs: {plan.summary}"
    owned = {i.key: i for i in actual.owned}
    assert len(owned) == len(actual.owned), "duplicate owned keys"
    foreign_values = {(t, v) for t, v, _ in foreign_keys}
    held = {k for k in desired.desired if (k.type.value, k.value) in foreign_values}
    assert held, "some desired values are held by other applications"
    assert set(owned) == set(desired.desired) - held
    mismatched = [k for k in owned if desired.desired[k].essence() != owned[k].essence()]
    assert mismatched == []
    # The chaos really happened: faults of several kinds, expired tokens, late writes.
    assert sum(faults.values()) >= 8 and len(faults) >= 4 and faults[401] >= 1, faults
    assert any("ReadTimeout" in m for m in warnings), "no client timeout happened"
    # Run 3's events land on the index of run 1, kept through run 2's failed read.
    assert stream_writes, "the stream's scoped reconciles wrote nothing"
    assert sum(1 for r in log if r.endpoint == "token") > 5
    # Ownership, from the wire: no write ever carried another application's identity or id,
    # and their rows are exactly as they were.
    assert not {(t, v) for t, v, _ in written_keys(log)} & foreign_values
    assert not deleted_ids(log) & set(foreign)
    for ident, row in foreign.items():
        assert defender.get(ident) == row


def _wait_for_stream(consumer: StreamConsumer, opencti: OpenCTIEmulator) -> None:
    """Until the consumer handed over every event (position at the last one), at most 30 s."""
    last = opencti.events()[-1]["id"] if opencti.events() else None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pos = consumer.saved_position
        if last is None or (pos is not None and _pos(pos) >= _pos(last)):
            return
        time.sleep(0.05)
    raise AssertionError(f"stream stuck at {consumer.saved_position}, last event {last}")


def _pos(position: str) -> tuple[int, int]:
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def test_an_indicator_of_another_application_with_our_identity_is_never_written() -> None:
    """Defender upserts on (type, value, action): importing a key that a portal indicator
    already holds with the same action would rewrite that portal indicator."""
    with DefenderEmulator(rate_limits=False) as defender, OpenCTIEmulator() as opencti:
        opencti.create_indicator(pattern="[domain-name:value = 'shared.badhost.net']", score=90)
        settings = settings_for(defender, opencti)
        with open_engine(settings) as engine:
            (ours,) = engine.read_desired().desired.values()
            theirs = defender.add_indicator(
                indicatorValue=ours.indicator_value,
                indicatorType=ours.indicator_type.value,
                action=ours.action.value,
                application="Portal",
                title="analyst's own block",
            )
            for _ in range(2):
                engine.apply(engine.plan())
            second = engine.plan()
        assert not written_keys(defender.requests) & {row_key(theirs)}
        assert defender.get(theirs["id"]) == theirs
        # And the run settles: the key is reported, not re-imported on every run.
        assert second.is_empty, second.summary


def test_stall_fault_times_the_client_out_and_the_write_lands_late() -> None:
    """The emulator knob the chaos relies on: ``p_timeout`` holds the request ``stall``
    seconds, then serves it (the client gave up; the write still happens)."""
    clock = FakeClock(datetime.now(UTC))
    with DefenderEmulator(rate_limits=False, clock=clock) as defender:
        client = short_timeout_client(defender, clock, timeout=0.1)
        client.retry = RetryPolicy(max_attempts=1)
        defender.set_faults(p_timeout=1.0, stall=0.4, endpoints=["import"])
        body = {
            "indicatorValue": "late.badhost.net",
            "indicatorType": "DomainName",
            "action": "Block",
            "title": "late",
            "description": "late",
            "application": "opencti",
            "generateAlert": True,
        }
        started = time.monotonic()
        with pytest.raises(TransientError, match="ReadTimeout"):
            client.import_indicators([body])
        assert time.monotonic() - started < 0.4
        deadline = time.monotonic() + 5
        while not defender.indicators() and time.monotonic() < deadline:
            time.sleep(0.02)
        client.close()
        assert [r["indicatorValue"] for r in defender.indicators()] == ["late.badhost.net"]
