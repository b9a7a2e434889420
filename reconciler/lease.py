"""The Kubernetes side of leader election: ``kubernetes_asyncio``'s Lease lock and elector,
with the fixes they need as shipped. Imported only by ``leader`` and only when leader election
is on, so the CLI never pays for ``kubernetes_asyncio`` (or aiohttp) otherwise.

Owns: the API client built from explicit settings or the in-cluster service account
(``open_api_client``), ``TimedLeaseLock`` (the library's ``LeaseLock``) and ``GuardedElection``
(the library's ``LeaderElection``). The library keeps doing the lease protocol: reading the
Lease, creating it, taking it over once it has not changed for a lease duration, renewing it
with the resourceVersion it read (optimistic concurrency: a 409 means someone else wrote).
Must not: decide what the controller does as leader (``leader`` and ``controller`` do), read
settings, or log the token.

What the library does as shipped (kubernetes_asyncio 36.1), and the fix here:

- no request timeout: a request to an API server that stopped answering (a partition, a hung
  connection) waits forever, so the renew loop never reaches its deadline and the leader
  keeps believing it leads. Every request here has ``request_timeout`` (the retry period,
  below the renew deadline);
- transport errors (refused or dropped connections, timeouts) escape ``try_acquire_or_renew``
  and end ``run()`` without calling the "stopped leading" callback. Here any error of one
  attempt is a failed attempt, so the renew loop reaches its deadline and the callback runs;
- times are written from ``datetime.fromtimestamp`` (local time) with a ``Z`` suffix (UTC),
  a time whose microseconds are 0 is not written at all, and a lease duration that is not a
  whole number (``15.0``) fails every write. Here the lock keeps the
  elector's local-time strings inside the process and writes UTC ``MicroTime`` values
  (``2006-01-02T15:04:05.000000Z``), which an API server parses;
- a follower retries every retry period, so it takes over up to a retry period after the
  lease ran out; here it sleeps until the lease runs out when that is sooner.

``GuardedElection`` reports each attempt (when it started, whether it succeeded, the holder it
saw) to ``leader.LeaseState``: a success proves the lease was ours when it was written, which is
what the write guard counts from.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import load_incluster_config
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock
from loguru import logger

__all__ = [
    "GuardedElection",
    "TimedLeaseLock",
    "election_config",
    "micro_time",
    "open_api_client",
]

#: The elector's own time strings: ``str(datetime)`` of a naive local time.
_LOCAL_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")

#: ``attempt(started_monotonic, ok, holder_seen)``, called after every attempt.
AttemptHook = Callable[[float, bool, "str | None"], None]


def micro_time(moment: datetime) -> str:
    """A Kubernetes ``MicroTime``: UTC, always six fractional digits, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _local_naive(text: str | None) -> datetime | None:
    for fmt in _LOCAL_FORMATS:
        try:
            return datetime.strptime(text or "", fmt)
        except ValueError:
            continue
    return None


def open_api_client(api_url: str | None, token_file: Path | None) -> Any:
    """An ``ApiClient`` for ``api_url`` with the token read from ``token_file``, or for the
    in-cluster service account when ``api_url`` is None. Call inside the running loop."""
    configuration = client.Configuration()
    if api_url is None:
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        configuration.host = api_url
        if token_file is not None:
            token = token_file.read_text(encoding="utf-8").strip()
            configuration.api_key["BearerToken"] = f"Bearer {token}"
    return client.ApiClient(configuration=configuration)


def election_config(
    lock: TimedLeaseLock,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    on_started: Callable[[], Coroutine[Any, Any, None]],
    on_stopped: Callable[[], Coroutine[Any, Any, None]],
) -> Any:
    """The library's election config (it checks the timings' order itself)."""
    return Config(
        lock,
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        onstarted_leading=on_started,
        onstopped_leading=on_stopped,
    )


class TimedLeaseLock(LeaseLock):  # type: ignore[misc]
    """The library's Lease lock with a timeout on every request, UTC times on the wire and
    ``release`` (step down at shutdown so a follower takes over at its next attempt)."""

    def __init__(
        self, name: str, namespace: str, identity: str, api_client: Any, request_timeout: float
    ) -> None:
        super().__init__(name, namespace, identity, api_client)
        self.request_timeout = request_timeout
        #: monotonic time of the last answer from the API server (any status)
        self.last_answer: float | None = None

    async def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            lease = await self.api_instance.read_namespaced_lease(
                name, namespace, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            self._answered(exc)
            return False, exc
        self._answered(None)
        self.lease_reference = lease
        return True, self.election_record(lease)

    async def create(self, name: str, namespace: str, election_record: Any) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=name), spec=self.update_lease(election_record)
        )
        try:
            await self.api_instance.create_namespaced_lease(
                namespace, body, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            self._answered(exc)
            logger.info("lease {}/{}: not created ({})", namespace, name, _status(exc))
            return False
        self._answered(None)
        return True

    async def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.lease_reference is None:
            return False
        self.lease_reference.spec = self.update_lease(updated_record, self.lease_reference.spec)
        try:
            await self.api_instance.replace_namespaced_lease(
                name, namespace, self.lease_reference, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            self._answered(exc)
            logger.info("lease {}/{}: not updated ({})", namespace, name, _status(exc))
            return False
        self._answered(None)
        return True

    async def release(self) -> bool:
        """Clear the holder of a lease we hold (read first: never another's); True when done."""
        ok, _ = await self.get(self.name, self.namespace)
        lease: Any = self.lease_reference
        if not ok or lease is None or lease.spec is None:
            return False
        if lease.spec.holder_identity != self.identity:
            return False
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        lease.spec.renew_time = micro_time(datetime.now(UTC))
        try:
            await self.api_instance.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            logger.info("lease {}/{}: not released ({})", self.namespace, self.name, _status(exc))
            return False
        return True

    def update_lease(self, record: Any, current_spec: Any = None) -> Any:
        """The Lease spec for ``record``: the library's, with the duration written as whole
        seconds rounded up (the library's ``int("15.0")`` fails on a float setting)."""
        spec = current_spec if current_spec is not None else client.V1LeaseSpec()
        spec.holder_identity = record.holder_identity
        spec.lease_duration_seconds = math.ceil(float(record.lease_duration))
        for field in ("acquire_time", "renew_time"):
            value = self.time_str_to_iso(getattr(record, field))
            if value is not None:
                setattr(spec, field, value)
        return spec

    # -- times: local-time strings inside (the elector's), UTC MicroTime on the wire ----------
    def election_record(self, lease: Any) -> Any:
        record = LeaderElectionRecord(None, None, None, None)
        spec = lease.spec
        if spec is None:
            return record
        record.holder_identity = spec.holder_identity or None
        if spec.lease_duration_seconds:
            record.lease_duration = str(spec.lease_duration_seconds)
        for field in ("acquire_time", "renew_time"):
            value = getattr(spec, field)
            if isinstance(value, datetime):
                aware = value if value.tzinfo else value.replace(tzinfo=UTC)
                setattr(record, field, str(aware.astimezone().replace(tzinfo=None)))
        return record

    def time_str_to_iso(self, str_time: str | None) -> str | None:
        local = _local_naive(str_time)
        return None if local is None else micro_time(local.astimezone())

    def _answered(self, exc: ApiException | None) -> None:
        if exc is None or exc.status:  # status 0: no answer (the library's own errors)
            self.last_answer = time.monotonic()


def _status(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}" if exc.status else str(exc.reason)


class GuardedElection(LeaderElection):  # type: ignore[misc]
    """The library's elector, with every failed attempt counted as a failed renewal (transport
    errors included), each attempt reported, and a follower waking when the lease runs out."""

    def __init__(self, config: Any, attempt: AttemptHook) -> None:
        super().__init__(config)
        self._attempt = attempt

    async def try_acquire_or_renew(self) -> bool:
        started = time.monotonic()
        try:
            ok = bool(await super().try_acquire_or_renew())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transport errors, timeouts: the attempt failed
            logger.warning(
                "lease: attempt failed ({}: {})", type(exc).__name__, str(exc)[:200] or "timeout"
            )
            ok = False
        holder = self.observed_record.holder_identity if self.observed_record else None
        self._attempt(started, ok, holder)
        return ok

    async def acquire(self) -> bool:
        """Try now, then every retry period, or sooner when the observed lease runs out."""
        while True:
            if await self.try_acquire_or_renew():
                return True
            await asyncio.sleep(self._next_attempt_in())

    def _next_attempt_in(self) -> float:
        period = float(self.election_config.retry_period)
        if self.observed_record is None or not self.observed_time_milliseconds:
            return period
        runs_out = self.observed_time_milliseconds / 1000 + self.election_config.lease_duration
        # A hair after the lease ran out: the elector compares with ">".
        return max(0.05, min(period, runs_out - time.time() + 0.05))
