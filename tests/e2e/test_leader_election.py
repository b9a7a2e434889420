"""End to end, high availability: three ``reconciler run`` processes with leader election
against the Lease API emulator, one Defender emulator and the fake OpenCTI.

Each replica logs in to Defender with its own client id, so the Defender emulator's request log
says which replica sent each write, and talks to the Lease API with its own token, so the Lease
emulator can cut one replica off (a partition) and its log says who held the lease when.

- ``test_leader_killed_mid_apply_hands_over_without_overlap``: the leader is SIGKILLed between
  two import calls of its first apply; no two replicas ever write at once, a new leader takes
  the lease within lease duration + retry period of the old leader's last renewal, and
  Defender converges.
- ``test_partitioned_leader_stops_writing_before_the_lease_is_taken``: the leader, writing
  steadily (a stream of OpenCTI creates), is cut off from the Lease API: its last write ends
  before another replica acquires the lease, and Defender converges again once healed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.leases import LeaseEmulator, LeaseRequest
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import TODAY, wait_for, write_config

pytestmark = pytest.mark.timeout(240)

LEASE, RENEW, RETRY = 5.0, 2.5, 1.0
NAMES = ("r1", "r2", "r3")
NAMESPACE, LEASE_NAME = "secops", "reconciler-e2e"
WRITES = {"import", "batch_delete", "delete", "submit"}
IMPORT_DELAY = 0.4  # seconds each import call takes: the first apply spans several seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    name: str
    client_id: str
    port: int
    config: Path
    log: Path
    proc: subprocess.Popen[str] | None = None

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    leases: LeaseEmulator
    defender: DefenderEmulator
    opencti: OpenCTIEmulator
    replicas: dict[str, Replica]
    check_config: Path

    def by_client(self, client_id: str | None) -> str | None:
        return next((r.name for r in self.replicas.values() if r.client_id == client_id), None)

    def writes(self) -> list[tuple[str, datetime, datetime]]:
        """(replica, started, ended) of every Defender write call, in arrival order."""
        out = []
        for record in list(self.defender.requests):
            name = self.by_client(record.client_id)
            if record.endpoint in WRITES and name is not None and record.started is not None:
                out.append((name, record.started, record.time))
        return sorted(out, key=lambda w: w[1])

    def holder(self) -> str | None:
        taken = self.leases.acquisitions()
        return taken[-1].holder if taken else None

    def leader(self) -> Replica | None:
        """The replica holding the lease, identified by who wrote it last."""
        taken = self.leases.acquisitions()
        return self.replicas[taken[-1].client] if taken and taken[-1].holder else None

    def in_sync(self) -> bool:
        """``reconciler plan --detailed-exitcode`` from outside: 0 = Defender matches."""
        return main(["plan", "--config", str(self.check_config), "--detailed-exitcode"]) == 0

    def start(self, replica: Replica) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "OPENCTI_"))}
        with replica.log.open("a") as sink:
            replica.proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", "--config", str(replica.config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
            )


def assert_one_writer_at_a_time(writes: list[tuple[str, datetime, datetime]]) -> list[str]:
    """No write of one replica overlaps a write of another; returns the writers in order."""
    for i, (name, started, ended) in enumerate(writes):
        for other, o_started, o_ended in writes[i + 1 :]:
            if other != name:
                assert ended <= o_started or o_ended <= started, (
                    f"{name} wrote {started:%T.%f}-{ended:%T.%f} while {other} wrote "
                    f"{o_started:%T.%f}-{o_ended:%T.%f}"
                )
    order: list[str] = []
    for name, _, _ in writes:
        if not order or order[-1] != name:
            order.append(name)
    return order


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("ha")
    secrets = {f"client-{n}": f"secret-{n}-0123" for n in NAMES}
    defender = DefenderEmulator(
        cert_dir=str(tmp / "certs"), rate_limits=False, extra_clients=secrets
    ).start()
    opencti = OpenCTIEmulator(heartbeat_interval=0.5).start()
    opencti.load(generate_indicators(2500, seed=11, now=TODAY))
    leases = LeaseEmulator(tokens={f"token-{n}": n for n in NAMES}).start()
    replicas: dict[str, Replica] = {}
    for name in NAMES:
        token_file = tmp / f"{name}.token"
        token_file.write_text(f"token-{name}\n")
        port = _free_port()
        config = write_config(
            tmp / f"{name}.yml",
            defender,
            opencti,
            microsoft_defender_intel__client_id=f"client-{name}",
            microsoft_defender_intel__client_secret=secrets[f"client-{name}"],
            connector__log_level="info",
            reconciler__interval_seconds=60,
            reconciler__http_port=port,
            reconciler__state_path=str(tmp / f"{name}-state.json"),
            reconciler__tenant="contoso",
            reconciler__leader_election=True,
            reconciler__lease_name=LEASE_NAME,
            reconciler__lease_namespace=NAMESPACE,
            reconciler__lease_duration_seconds=LEASE,
            reconciler__renew_deadline_seconds=RENEW,
            reconciler__retry_period_seconds=RETRY,
            reconciler__kubernetes_api_url=leases.url,
            reconciler__kubernetes_token_file=str(token_file),
        )
        replicas[name] = Replica(name, f"client-{name}", port, config, tmp / f"{name}.log")
    check = write_config(tmp / "check.yml", defender, opencti, connector__log_level="error")
    running = Cluster(leases, defender, opencti, replicas, check)
    try:
        yield running
    finally:
        for replica in replicas.values():
            if replica.proc is not None and replica.proc.poll() is None:
                replica.proc.kill()
                replica.proc.wait()
        leases.stop()
        defender.stop()
        opencti.stop()


def _slow_imports(endpoint: str, method: str, path: str) -> None:
    if endpoint == "import":
        time.sleep(IMPORT_DELAY)


def test_leader_killed_mid_apply_hands_over_without_overlap(cluster: Cluster) -> None:
    cluster.defender.on_request(_slow_imports)
    for replica in cluster.replicas.values():
        cluster.start(replica)
    leader = wait_for(cluster.leader, 60, "a leader")
    wait_for(
        lambda: any(name == leader.name for name, _, _ in cluster.writes()),
        60,
        "the leader's first write",
    )
    assert leader.proc is not None
    leader.proc.send_signal(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    leader.proc.wait(10)
    assert not cluster.in_sync(), "killed after the apply finished: not mid-apply"
    owned_at_kill = len([r for r in cluster.defender.indicators() if r["application"] == "opencti"])

    successor = wait_for(
        lambda: (r := cluster.leader()) is not None and r.name != leader.name and r, 30, "takeover"
    )
    cluster.defender.on_request(None)
    wait_for(lambda: successor.http("/readyz")[0] == 200, 90, "the new leader's full reconcile")
    assert cluster.in_sync()

    writes = cluster.writes()
    order = assert_one_writer_at_a_time(writes)
    assert order == [leader.name, successor.name], order
    last_renewal = _last_write_of(cluster.leases.log(), leader.name)
    taken = next(
        a for a in cluster.leases.acquisitions() if a.client == successor.name and a.holder
    )
    takeover = (taken.time - last_renewal.time).total_seconds()
    after_kill = (taken.time - killed_at).total_seconds()
    first_write_of_successor = next(w for w in writes if w[0] == successor.name)
    last_of_killed = max(w[2] for w in writes if w[0] == leader.name)
    print(
        f"\nHA kill: {leader.name} killed with {owned_at_kill} indicators written; "
        f"{successor.name} took the lease {takeover:.2f} s after {leader.name}'s last renewal "
        f"({after_kill:.2f} s after the kill; bound lease + retry = {LEASE + RETRY:g} s); "
        f"last write of {leader.name} ended {last_of_killed:%T.%f}, "
        f"first of {successor.name} started {first_write_of_successor[1]:%T.%f}; "
        f"{len(writes)} write calls, writers in order {order}"
    )
    # Never before the lease ran out; at most a retry period after (the follower saw the last
    # renewal within one poll and wakes when the lease runs out), plus request latency.
    assert LEASE <= takeover <= LEASE + RETRY + 0.75
    # The follower that did not take over never wrote.
    assert {w[0] for w in writes} == {leader.name, successor.name}
    assert "following (leader: " in next(
        r.http("/readyz")[1]
        for r in cluster.replicas.values()
        if r.name not in (leader.name, successor.name)
    )
    metrics = successor.http("/metrics")[1]
    assert 'reconciler_leader{tenant="contoso"} 1.0' in metrics
    assert "tenant=contoso" in successor.logs() or '"tenant": "contoso"' in successor.logs()


def _last_write_of(log: list[LeaseRequest], client: str) -> LeaseRequest:
    return [r for r in log if r.client == client and r.written][-1]


def test_partitioned_leader_stops_writing_before_the_lease_is_taken(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    wait_for(lambda: leader.http("/readyz")[0] == 200, 60, "leader ready")
    stop = threading.Event()
    created: list[str] = []

    def feed() -> None:  # a steady trickle of creates: the leader writes every second or so
        i = 0
        while not stop.wait(0.3):
            value = f"203.0.113.{i % 250}" if i < 250 else f"198.18.{i // 250}.{i % 250}"
            cluster.opencti.create_indicator(
                name=f"feed {i}",
                pattern=f"[ipv4-addr:value = '{value}']",
                score=80,
                main_observable_type="IPv4-Addr",
            )
            created.append(value)
            i += 1

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        wait_for(lambda: _wrote_since(cluster, leader.name, time.time() - 1), 30, "steady writes")
        partitioned_at = time.time()
        cluster.leases.partition(leader.name)
        successor = wait_for(
            lambda: (r := cluster.leader()) is not None and r.name != leader.name and r,
            LEASE * 3,
            "another replica takes the lease",
        )
        wait_for(lambda: _wrote_since(cluster, successor.name, partitioned_at), 30, "new writes")
    finally:
        stop.set()
        feeder.join(5)
        cluster.leases.heal(leader.name)

    taken = [a for a in cluster.leases.acquisitions() if a.client == successor.name][-1]
    writes = cluster.writes()
    assert_one_writer_at_a_time(writes)
    last_of_old = max(w[2] for w in writes if w[0] == leader.name)
    first_of_new = min(
        w[1] for w in writes if w[0] == successor.name and w[1].timestamp() > partitioned_at
    )
    margin = (taken.time - last_of_old).total_seconds()
    cut_at = datetime.fromtimestamp(partitioned_at, UTC)
    print(
        f"\nHA partition: {leader.name} cut off at {cut_at:%T.%f}; "
        f"its last write ended {last_of_old:%T.%f}, {successor.name} took the lease at "
        f"{taken.time:%T.%f} ({margin:.2f} s later) and first wrote at {first_of_new:%T.%f}"
    )
    assert last_of_old < taken.time <= first_of_new
    assert last_of_old.timestamp() - partitioned_at < RENEW + 1.0
    assert "not writing any more" in leader.logs()

    # Healed: the old leader follows again, and Defender ends up with every created value.
    wait_for(
        lambda: "following (leader: " in leader.http("/readyz")[1], LEASE * 4, "old leader follows"
    )
    wait_for(cluster.in_sync, 90, "Defender converged")
    owned = {r["indicatorValue"] for r in cluster.defender.indicators()}
    assert set(created) <= owned


def _wrote_since(cluster: Cluster, name: str, since: float) -> bool:
    cutoff = datetime.fromtimestamp(since, UTC)
    return any(w[0] == name and w[1] >= cutoff for w in cluster.writes())
