"""Crash-restart: ``reconciler apply`` killed with SIGKILL at seeded points of its writes.

Each round changes OpenCTI (creates, action changes = replaces, revokes, deletes) so the apply
has deletes, imports and old-id deletes to do, then starts ``python -m reconciler apply`` and
kills it on the k-th write call it makes: sometimes as the call arrives (the write still lands
but the process never sees the answer), sometimes a few milliseconds later (anywhere in the
rest of the apply). After 20 kills one clean apply must converge: exit 0, ``plan
--detailed-exitcode`` exit 0, and no (type, value) held twice among the owned indicators.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import write_config
from tests.reliability.support import TODAY

KILLS = 20
MAX_ROUNDS = 32
WRITES = ("import", "batch_delete", "delete", "submit")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def servers() -> Iterator[tuple[DefenderEmulator, OpenCTIEmulator]]:
    with (
        DefenderEmulator(rate_limits=False, seed=4) as defender,
        OpenCTIEmulator(seed=4) as opencti,
    ):
        opencti.load(generate_indicators(1500, seed=31, now=TODAY))
        yield defender, opencti


class Killer:
    """Kills the running apply on its k-th write call (from the emulator's request hook)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.proc: subprocess.Popen[bytes] | None = None
        self.kill_at = 0
        self.delay = 0.0
        self.writes = 0
        self.lock = threading.Lock()

    def arm(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.proc = proc
            self.writes = 0
            self.kill_at = self.rng.randint(1, 3)
            # Half the kills as the call arrives, half somewhere in the next 40 ms.
            self.delay = 0.0 if self.rng.random() < 0.5 else self.rng.uniform(0.001, 0.04)

    def disarm(self) -> None:
        with self.lock:
            self.proc = None

    def __call__(self, endpoint: str, method: str, path: str) -> None:
        if endpoint not in WRITES:
            return
        with self.lock:
            self.writes += 1
            proc = self.proc
            if proc is None or self.writes != self.kill_at:
                return
            delay = self.delay
        if delay == 0.0:
            proc.send_signal(signal.SIGKILL)
        else:
            threading.Timer(delay, proc.send_signal, args=(signal.SIGKILL,)).start()


def _change_opencti(opencti: OpenCTIEmulator, rng: random.Random, round_no: int) -> None:
    records = [r for r in opencti.indicators() if not r.get("revoked")]
    picks = rng.sample(records, 180)
    for record in picks[:120]:
        # Crosses action thresholds (Block >= 60, Alert 30-59, Warn 1-29): replaces.
        opencti.update_indicator(record["id"], score=rng.choice((10, 45, 80, 95)))
    for record in picks[120:150]:
        opencti.update_indicator(record["id"], description=f"round {round_no}")
    for record in picks[150:165]:
        opencti.revoke_indicator(record["id"])
    for record in picks[165:]:
        opencti.delete_indicator(record["id"])
    for i in range(40):
        opencti.create_indicator(
            pattern=f"[domain-name:value = 'crash-{round_no}-{i}.badhost.net']",
            score=rng.choice((20, 50, 90)),
        )


def _reconciler(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", args[0], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCTI_", "CONNECTOR_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["NO_COLOR"] = "1"
    return env


def test_sigkill_twenty_times_during_apply_then_converges_without_duplicates(
    servers: tuple[DefenderEmulator, OpenCTIEmulator], tmp_path: Path
) -> None:
    defender, opencti = servers
    config = write_config(tmp_path / "config.yml", defender, opencti)
    rng = random.Random(20261128)
    killer = Killer(rng)
    defender.on_request(killer)
    kills = 0
    outcomes: Counter[str] = Counter()
    for round_no in range(MAX_ROUNDS):
        if kills >= KILLS:
            break
        _change_opencti(opencti, rng, round_no)
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=_env(),
        )
        killer.arm(proc)
        try:
            code = proc.wait(timeout=60)
        finally:
            killer.disarm()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code == -signal.SIGKILL:
            kills += 1
            outcomes["killed"] += 1
            if _duplicates(defender):
                outcomes["killed mid-replace"] += 1
        else:
            outcomes[f"exit {code}"] += 1
            assert code == 0, f"round {round_no}: apply exited {code} without being killed"
    assert kills >= KILLS, f"only {kills} kills in {MAX_ROUNDS} rounds: {outcomes}"
    defender.on_request(None)

    final = _reconciler(config, "apply")
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    check = _reconciler(config, "plan", "--detailed-exitcode")
    assert check.returncode == 0, check.stdout[:3000] + check.stderr[-2000:]

    # The kills hit the window that matters: a replace's new row imported, its old not deleted.
    assert outcomes["killed mid-replace"] >= 1, outcomes
    assert _duplicates(defender) == []
    owned = [r for r in defender.indicators() if r.get("application") == "opencti"]
    assert len(owned) > 500
    _assert_matches_opencti(owned, opencti)


def _assert_matches_opencti(owned: list[dict[str, Any]], opencti: OpenCTIEmulator) -> None:
    """Every owned row points at a live, unrevoked OpenCTI indicator (no orphan survived)."""
    live = {r["id"] for r in opencti.indicators() if not r.get("revoked")}
    orphans = [r["indicatorValue"] for r in owned if r.get("externalId") not in live]
    assert orphans == []


def _duplicates(defender: DefenderEmulator) -> list[tuple[str, str]]:
    """(type, value) pairs held by more than one owned row (a replace cut in half)."""
    owned = [r for r in defender.indicators() if r.get("application") == "opencti"]
    pairs = Counter((r["indicatorType"], r["indicatorValue"]) for r in owned)
    return [p for p, n in pairs.items() if n > 1]
