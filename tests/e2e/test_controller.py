"""End to end: ``reconciler run`` as a real subprocess against both sandbox servers.

One controller process serves the whole module (start-up costs a few seconds); the tests run
in file order and the disruptive ones (servers killed, SIGTERM) come last.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import TODAY, wait_for, write_config

pytestmark = pytest.mark.timeout(300)

INTERVAL = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    defender: DefenderEmulator
    opencti: OpenCTIEmulator
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def owned_values(self) -> dict[str, dict[str, Any]]:
        return {
            r["indicatorValue"]: r
            for r in self.defender.indicators()
            if r.get("application") == "opencti"
        }

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def _ipv4_pattern(value: str) -> str:
    return f"[ipv4-addr:value = '{value}']"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("controller")
    defender = DefenderEmulator(cert_dir=str(tmp / "certs")).start()
    opencti = OpenCTIEmulator(heartbeat_interval=0.5).start()
    opencti.load(generate_indicators(200, seed=3, now=TODAY))
    port = _free_port()
    config = write_config(
        tmp / "config.yml",
        defender,
        opencti,
        reconciler__interval_seconds=INTERVAL,
        reconciler__http_port=port,
        reconciler__state_path=str(tmp / "state.json"),
        connector__log_level="info",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "OPENCTI_"))}
    log = tmp / "controller.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
    run = Running(defender, opencti, proc, port, log)
    try:
        wait_for(lambda: run.http("/readyz")[0] == 200, 60, "first full reconcile")
        yield run
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        defender.stop()
        opencti.stop()


def test_startup_reconcile_makes_ready_and_fills_defender(running: Running) -> None:
    assert running.http("/healthz")[0] == 200
    assert len(running.owned_values()) > 100
    assert running.defender.counts().get("submit", 0) == 0


def test_create_event_reaches_defender_in_under_3_seconds(running: Running) -> None:
    start = time.monotonic()
    running.opencti.create_indicator(
        name="fresh c2",
        pattern=_ipv4_pattern("198.51.100.77"),
        score=80,
        main_observable_type="IPv4-Addr",
    )
    row = wait_for(lambda: running.owned_values().get("198.51.100.77"), 10, "create event")
    elapsed = time.monotonic() - start
    assert elapsed < 3.0, f"create took {elapsed:.2f} s"
    assert row["action"] == "Block" and row["severity"] == "High"


def test_burst_of_1000_creates_costs_at_most_5_imports(running: Running) -> None:
    before = running.defender.counts().get("import", 0)
    values = [f"45.{i // 250}.{i % 250}.9" for i in range(1000)]
    for v in values:
        running.opencti.create_indicator(
            name=v, pattern=_ipv4_pattern(v), score=50, main_observable_type="IPv4-Addr"
        )
    wait_for(lambda: all(v in running.owned_values() for v in values), 60, "1000 creates applied")
    used = running.defender.counts().get("import", 0) - before
    assert used <= 5, f"{used} import calls for a burst of 1000"


def test_update_changing_score_replaces_and_changes_severity(running: Running) -> None:
    rec = running.opencti.create_indicator(
        name="score moves",
        pattern=_ipv4_pattern("198.51.100.91"),
        score=40,
        main_observable_type="IPv4-Addr",
    )
    first = wait_for(lambda: running.owned_values().get("198.51.100.91"), 10, "create")
    assert (first["action"], first["severity"]) == ("Alert", "Medium")
    running.opencti.update_indicator(rec["id"], score=90)

    def replaced() -> dict[str, Any] | None:
        # A replace imports the new indicator, then deletes the old id: wait for both steps.
        same = [r for r in running.defender.indicators() if r["indicatorValue"] == "198.51.100.91"]
        return same[0] if [r["action"] for r in same] == ["Block"] else None

    row = wait_for(replaced, 10, "replace: the Block indicator alone, the old Alert one gone")
    assert row["severity"] == "High" and row["id"] != first["id"]


def test_delete_event_removes_only_that_contribution(running: Running) -> None:
    shared = "198.51.100.120"
    a = running.opencti.create_indicator(
        name="a", pattern=_ipv4_pattern(shared), score=70, main_observable_type="IPv4-Addr"
    )
    b = running.opencti.create_indicator(
        name="b", pattern=_ipv4_pattern(shared), score=65, main_observable_type="IPv4-Addr"
    )
    solo = running.opencti.create_indicator(
        name="solo",
        pattern=_ipv4_pattern("198.51.100.121"),
        score=70,
        main_observable_type="IPv4-Addr",
    )
    wait_for(
        lambda: running.owned_values().get(shared, {}).get("externalId") == a["id"],
        10,
        "shared key owned by a",
    )
    wait_for(lambda: "198.51.100.121" in running.owned_values(), 10, "solo")
    running.opencti.delete_indicator(a["id"])
    running.opencti.delete_indicator(solo["id"])
    wait_for(lambda: "198.51.100.121" not in running.owned_values(), 10, "solo removed")
    row = wait_for(
        lambda: (r := running.owned_values().get(shared)) and r["externalId"] == b["id"] and r,
        10,
        "shared key moved to b",
    )
    assert row["indicatorValue"] == shared


def test_metrics_are_exposed_with_sane_values(running: Running) -> None:
    status, text = running.http("/metrics")
    assert status == 200
    lines = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }

    def metric(prefix: str) -> float:
        return sum(v for k, v in lines.items() if k.startswith(prefix))

    assert metric('reconciler_reconcile_runs_total{result="success",trigger="startup"}') == 1
    assert metric('reconciler_reconcile_runs_total{result="success",trigger="stream"}') >= 1
    assert metric("reconciler_owned_indicators") > 1000
    assert metric("reconciler_quota_used") >= metric("reconciler_owned_indicators")
    assert metric("reconciler_quota_free") > 0
    assert metric('reconciler_defender_api_calls_total{endpoint="import"') >= 2
    assert metric('reconciler_stream_events_total{type="create"}') >= 1000
    assert metric('reconciler_applied_changes_total{action="create"}') > 1000
    assert metric("reconciler_last_success_timestamp_seconds") > time.time() - 3600
    assert metric('reconciler_planned_changes_total{action="create"}') > 1000
    assert "reconciler_reconcile_duration_seconds_bucket" in text


def test_deleted_behind_our_back_is_restored_by_next_scheduled_run(running: Running) -> None:
    owned = running.owned_values()
    victim = owned["198.51.100.77"]
    running.defender.delete_indicator(victim["id"])
    row = wait_for(
        lambda: running.owned_values().get("198.51.100.77"), INTERVAL * 2 + 5, "restored"
    )
    assert row["id"] != victim["id"]


def test_stream_server_killed_and_restarted_catches_up(running: Running) -> None:
    marks = running.logs().count("stream: reconnecting in")
    running.opencti.stop()
    # While OpenCTI is down the controller stays up and keeps retrying the stream.
    wait_for(lambda: running.logs().count("stream: reconnecting in") > marks, 20, "a retry")
    assert running.proc.poll() is None
    assert running.http("/healthz")[0] == 200
    running.opencti.create_indicator(
        name="while down",
        pattern=_ipv4_pattern("198.51.100.200"),
        score=75,
        main_observable_type="IPv4-Addr",
    )
    running.opencti.start()
    wait_for(lambda: "198.51.100.200" in running.owned_values(), 40, "catch-up after restart")
    assert running.proc.poll() is None


def test_readyz_not_ready_when_defender_unreachable(running: Running) -> None:
    running.defender.stop()
    try:
        # The run in progress retries (capped backoff) before it gives up and is marked failed.
        wait_for(lambda: running.http("/readyz")[0] == 503, 150, "not ready")
        assert running.proc.poll() is None
        assert running.http("/healthz")[0] == 200
    finally:
        running.defender.start()
    wait_for(lambda: running.http("/readyz")[0] == 200, INTERVAL * 3 + 10, "ready again")


def test_sigterm_exits_zero(running: Running) -> None:
    start = time.monotonic()
    running.proc.send_signal(signal.SIGTERM)
    code = running.proc.wait(timeout=25)
    assert code == 0, running.logs()[-3000:]
    assert time.monotonic() - start < 20
