"""Leader election against the Lease API emulator, in-process: the emulator answers as an API
server does, one elector leads, the write guard turns off before anyone else can take over (a
partition, a dead API server), stopped-leading always runs, times go out in UTC, a released
lease is taken at once, and timings that could overlap two writers are refused."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import ConfigError
from reconciler.leader import LeaseElector, LeaseOptions, check_timings
from reconciler.sandbox.leases import LeaseEmulator

pytestmark = pytest.mark.timeout(60)

LEASE, RENEW, RETRY = 4.0, 1.5, 1.0
BASE = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"


def call(emu: LeaseEmulator, method: str, path: str, body: Any = None, token: str = "ta") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{emu.url}{path}", data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def lease_body(name: str = "l", holder: str = "a", rv: str | None = None, **spec: Any) -> Any:
    meta: dict[str, Any] = {"name": name}
    if rv is not None:
        meta["resourceVersion"] = rv
    full = {"holderIdentity": holder, "leaseDurationSeconds": 15, **spec}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": full}


@pytest.fixture
def emu() -> Iterator[LeaseEmulator]:
    with LeaseEmulator(tokens={"ta": "a", "tb": "b"}) as emulator:
        yield emulator


def test_the_emulator_answers_as_an_api_server(emu: LeaseEmulator) -> None:
    assert call(emu, "GET", f"{BASE}/l")[0] == 404
    assert call(emu, "GET", f"{BASE}/l")[1]["reason"] == "NotFound"
    status, created = call(emu, "POST", BASE, lease_body())
    assert status == 201
    rv = created["metadata"]["resourceVersion"]
    assert call(emu, "POST", BASE, lease_body())[1]["reason"] == "AlreadyExists"
    ok, updated = call(emu, "PUT", f"{BASE}/l", lease_body(holder="b", rv=rv))
    assert ok == 200 and updated["metadata"]["resourceVersion"] != rv
    conflict = call(emu, "PUT", f"{BASE}/l", lease_body(holder="a", rv=rv))
    assert conflict[0] == 409 and conflict[1]["reason"] == "Conflict"
    assert "the object has been modified" in conflict[1]["message"]
    assert call(emu, "PUT", f"{BASE}/other", lease_body(name="other"))[0] == 404
    assert call(emu, "PUT", f"{BASE}/l", lease_body(name="x"))[0] == 400
    bad_time = lease_body(renewTime="2026-01-01T00:00:00Z")  # no microseconds: not a MicroTime
    assert call(emu, "PUT", f"{BASE}/l", bad_time)[0] == 400
    assert call(emu, "PUT", f"{BASE}/l", lease_body(leaseDurationSeconds=0))[0] == 422
    good = lease_body(renewTime="2026-01-01T00:00:00.000000Z")
    assert call(emu, "PUT", f"{BASE}/l", good)[0] == 200  # no resourceVersion: unconditional
    assert call(emu, "GET", f"{BASE}/l", token="")[0] == 401
    assert call(emu, "GET", f"{BASE}/l", token="unknown")[0] == 401
    assert [r.holder for r in emu.acquisitions()] == ["a", "b", "a"]


def test_a_partitioned_client_hangs_until_healed(emu: LeaseEmulator) -> None:
    emu.partition("a")
    with pytest.raises(OSError):  # the read times out: nothing comes back
        urllib.request.urlopen(
            urllib.request.Request(f"{emu.url}{BASE}/l", headers={"Authorization": "Bearer ta"}),
            timeout=0.5,
        )
    assert call(emu, "GET", f"{BASE}/l", token="tb")[0] == 404  # others are answered
    emu.heal("a")
    assert call(emu, "GET", f"{BASE}/l")[0] == 404
    assert [r.status for r in emu.log() if r.client == "a"][-2:] == [0, 404]


class Candidate:
    """An elector plus what its callbacks saw."""

    def __init__(self, emu: LeaseEmulator, name: str, tmp: Path) -> None:
        token = tmp / f"{name}.token"
        token.write_text(f"t{name}")
        self.name = name
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.elector = LeaseElector(
            LeaseOptions(
                name="l",
                namespace="ns",
                identity=name,
                lease_duration=LEASE,
                renew_deadline=RENEW,
                retry_period=RETRY,
                api_url=emu.url,
                token_file=token,
            )
        )

    def start(self) -> Candidate:
        self.elector.start(self.started.set, self.stopped.set)
        return self


@pytest.fixture
def pair(emu: LeaseEmulator, tmp_path: Path) -> Iterator[dict[str, Candidate]]:
    both = {n: Candidate(emu, n, tmp_path).start() for n in "ab"}
    try:
        yield both
    finally:
        for candidate in both.values():
            candidate.elector.stop(release=False, timeout=3)


def wait(condition: Any, timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


def leader_of(pair: dict[str, Candidate]) -> tuple[Candidate, Candidate]:
    wait(lambda: any(c.elector.is_leader() for c in pair.values()), 10)
    first, second = pair.values()
    return (first, second) if first.elector.is_leader() else (second, first)


def test_one_leads_the_other_follows(emu: LeaseEmulator, pair: dict[str, Candidate]) -> None:
    leader, follower = leader_of(pair)
    wait(leader.started.is_set, 5)
    time.sleep(RETRY * 2)
    assert not follower.elector.is_leader() and not follower.started.is_set()
    assert follower.elector.follower_status() == (True, f"following (leader: {leader.name})")
    spec = emu.lease("ns", "l")["spec"]  # type: ignore[index]
    assert spec["holderIdentity"] == leader.name and spec["leaseDurationSeconds"] == 4


def test_partitioned_leader_stops_before_the_lease_can_be_taken(
    emu: LeaseEmulator, pair: dict[str, Candidate]
) -> None:
    leader, follower = leader_of(pair)
    emu.partition(leader.name)
    cut = time.monotonic()
    guard_off = wait(lambda: not leader.elector.is_leader(), RENEW + 1)
    taken = wait(follower.elector.is_leader, LEASE + RETRY + 2)
    assert guard_off <= RENEW + 0.5
    assert time.monotonic() - cut >= guard_off + (LEASE - RENEW) - RETRY
    # The request timeout lets the renew loop end: stopped-leading runs, on its own.
    wait(leader.stopped.is_set, RENEW + 3 * RETRY + 1)
    assert taken > guard_off


def test_a_dead_api_server_still_ends_the_term(tmp_path: Path) -> None:
    emu = LeaseEmulator().start()
    candidate = Candidate(emu, "a", tmp_path).start()
    try:
        wait(candidate.started.is_set, 10)
        emu.stop()  # connections refused: transport errors, not API answers
        wait(lambda: not candidate.elector.is_leader(), RENEW + 1)
        wait(candidate.stopped.is_set, RENEW + 3 * RETRY + 1)
    finally:
        candidate.elector.stop(release=False, timeout=3)


def test_times_go_out_in_utc_whatever_the_local_zone(
    emu: LeaseEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        candidate = Candidate(emu, "a", tmp_path).start()
        try:
            wait(candidate.started.is_set, 10)
            spec = emu.lease("ns", "l")["spec"]  # type: ignore[index]
        finally:
            candidate.elector.stop(release=False, timeout=3)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    renewed = datetime.strptime(spec["renewTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - renewed).total_seconds()) < 5  # not 9 hours off
    assert os.environ.get("TZ") != "Asia/Tokyo"


def test_a_released_lease_is_taken_at_the_next_attempt(
    emu: LeaseEmulator, pair: dict[str, Candidate]
) -> None:
    leader, follower = leader_of(pair)
    wait(leader.started.is_set, 5)
    leader.elector.stop(release=True, timeout=5)
    assert not leader.elector.is_leader()
    assert wait(follower.elector.is_leader, RETRY + 2) <= RETRY + 1


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "named"),
    [
        (14, 10, 2, "lease_duration_seconds"),
        (40, 10, 9, "RENEW_DEADLINE_SECONDS\\) = 10 must exceed 1.2"),
    ],
    ids=["lease-too-short", "renew-too-close-to-retry"],
)
def test_timings_that_could_overlap_writers_are_refused(
    lease: float, renew: float, retry: float, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        check_timings(lease, renew, retry)
    check_timings(15, 10, 2)


def test_the_library_as_shipped_leads_on_through_a_partition(emu: LeaseEmulator) -> None:
    """Why ``lease.py`` wraps the library: unwrapped, a leader cut off from the API server
    waits on its renewal forever, so its "stopped leading" callback never comes (while the
    others take the lease over after a lease duration). If this starts failing, the library
    fixed it and the wrapper can shrink."""
    import asyncio

    from kubernetes_asyncio import client
    from kubernetes_asyncio.leaderelection.electionconfig import Config
    from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

    stopped: list[float] = []

    async def scenario() -> None:
        configuration = client.Configuration()
        configuration.host = emu.url
        configuration.api_key["BearerToken"] = "Bearer ta"
        async with client.ApiClient(configuration) as api:

            async def started() -> None:
                emu.partition("a")  # cut off as soon as it leads

            async def on_stopped() -> None:
                stopped.append(time.monotonic())

            config = Config(LeaseLock("l", "ns", "a", api), 4, 2, 1, started, on_stopped)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(LeaderElection(config).run(), timeout=LEASE + 3)

    try:
        asyncio.run(scenario())
    finally:
        emu.heal("a")
    assert stopped == []
    assert [r.holder for r in emu.acquisitions()] == ["a"]
