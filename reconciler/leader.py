"""Leader election for ``reconciler run``: one writer among several replicas, through a
Kubernetes Lease (coordination.k8s.io/v1).

Owns: ``LeaseOptions`` (the election's settings, built by ``wiring``), ``LeaseState`` (the
write guard: may this replica write now?) and ``LeaseElector`` (the elector's thread and event
loop, the callbacks, stepping down at shutdown). It implements the controller's
``Leadership`` protocol. Must not: reconcile, read settings, or import ``kubernetes_asyncio`` at
module level (``lease`` holds the library parts and is imported when the elector starts).

The write guard, the invariant the controller relies on: **a replica writes only while its
last successful lease write is younger than the renew deadline.** An attempt that succeeded
wrote our identity into the Lease with the resourceVersion it had just read, so nobody else
held the lease then; the others take over only after seeing the Lease unchanged for a lease
duration, counted from when they saw its last change (never before it was written). So
``is_leader()`` turns False at ``start of the last successful attempt + renew deadline``, at
least ``lease duration - renew deadline`` (5 s by default) before anyone else can acquire it,
whatever the elector's loop is doing: a hung request, a partition, a slow event loop. The
controller checks it before starting a run and before every write call. A write call already
sent when the guard turns False still completes; Defender's writes are idempotent and both
sides compute them from the same OpenCTI data.

Timings: a request to the API server times out after the retry period; the lease duration must
exceed renew deadline + 2 x retry period (``check_timings``), so the elector's own loop also
notices a lost lease before it can be taken over. After losing the lease the replica goes back
to following and competes again. At shutdown, once the controller has stopped writing, the
leader clears the holder (``release``) so a follower takes over at its next attempt instead of
a lease duration later.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from reconciler.errors import ConfigError

__all__ = [
    "LeaseElector",
    "LeaseOptions",
    "LeaseState",
    "check_timings",
    "default_identity",
    "lease_namespace",
]

#: Where the in-cluster service account keeps its namespace.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

#: The library refuses a renew deadline at or under this many retry periods.
JITTER_FACTOR = 1.2


def default_identity() -> str:
    """``<hostname>_<8 hex>``: the pod name, unique even when a pod name is reused."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def check_timings(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """Raise ``ConfigError`` unless lease > renew deadline + 2 x retry period (the retry
    period is also the request timeout) and renew deadline > 1.2 x retry period."""
    problems = []
    if lease_duration <= renew_deadline + 2 * retry_period:
        problems.append(
            f"reconciler.lease_duration_seconds (RECONCILER_LEASE_DURATION_SECONDS) = "
            f"{lease_duration:g} must exceed renew_deadline_seconds + 2 x retry_period_seconds "
            f"= {renew_deadline + 2 * retry_period:g}"
        )
    if renew_deadline <= JITTER_FACTOR * retry_period:
        problems.append(
            f"reconciler.renew_deadline_seconds (RECONCILER_RENEW_DEADLINE_SECONDS) = "
            f"{renew_deadline:g} must exceed 1.2 x retry_period_seconds = "
            f"{JITTER_FACTOR * retry_period:g}"
        )
    if problems:
        raise ConfigError("leader election timings: " + "; ".join(problems))


@dataclass(frozen=True)
class LeaseOptions:
    """Where the Lease is, who we are, and the timings (seconds)."""

    name: str
    namespace: str
    identity: str
    lease_duration: float
    renew_deadline: float
    retry_period: float
    #: None: the in-cluster service account (API server, token, CA)
    api_url: str | None = None
    token_file: Path | None = None

    @property
    def request_timeout(self) -> float:
        """Each Kubernetes API request gives up after one retry period."""
        return self.retry_period


class LeaseState:
    """The write guard and what readiness reports; thread-safe, monotonic time."""

    def __init__(
        self, renew_deadline: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.renew_deadline = renew_deadline
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._valid_until = -math.inf
        self._expiry_told = True
        self.holder: str | None = None
        self.last_contact: float | None = None

    def attempt(self, started: float, ok: bool, holder: str | None, answered: bool) -> None:
        """One acquire/renew attempt ended: it started at ``started`` (monotonic)."""
        with self._lock:
            if ok:
                self._valid_until = max(self._valid_until, started + self.renew_deadline)
                self._expiry_told = False
            self.holder = holder
            if answered:
                self.last_contact = self._monotonic()

    def lost(self) -> None:
        with self._lock:
            self._valid_until = -math.inf

    def is_leader(self) -> bool:
        with self._lock:
            return self._monotonic() < self._valid_until

    def newly_expired(self) -> bool:
        """True once after the guard ran out (no success since); False otherwise."""
        with self._lock:
            if self._expiry_told or self._monotonic() < self._valid_until:
                return False
            self._expiry_told = True
            return True

    def reached_within(self, seconds: float) -> bool:
        with self._lock:
            last = self.last_contact
        return last is not None and self._monotonic() - last <= seconds


class LeaseElector:
    """Competes for the Lease in a thread of its own (an asyncio loop for the library) and
    calls back when this replica starts or stops leading. ``is_leader`` is the write guard."""

    def __init__(self, options: LeaseOptions) -> None:
        self.options = options
        self.state = LeaseState(options.renew_deadline)
        self._on_started: Callable[[], None] = _nothing
        self._on_stopped: Callable[[], None] = _nothing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._release = False
        self._leading = False
        self._callbacks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leader-cb")

    @property
    def identity(self) -> str:
        return self.options.identity

    def is_leader(self) -> bool:
        return self.state.is_leader()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def follower_status(self) -> tuple[bool, str]:
        """Readiness of a follower: ready while the Lease API answers."""
        holder = self.state.holder or "nobody"
        if self.state.reached_within(self.options.lease_duration):
            return True, f"following (leader: {holder})"
        return False, "following, but the Kubernetes API did not answer the Lease reads"

    def start(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        """Start competing; the callbacks run in a worker thread, one at a time."""
        self._on_started, self._on_stopped = on_started, on_stopped
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="leader-election", daemon=True
        )
        self._thread.start()
        ready.wait(5.0)
        o = self.options
        logger.info(
            "leader election on lease {}/{} as {} (lease {:g} s, renew deadline {:g} s, "
            "retry {:g} s)",
            o.namespace,
            o.name,
            o.identity,
            o.lease_duration,
            o.renew_deadline,
            o.retry_period,
        )

    def stop(self, *, release: bool, timeout: float = 5.0) -> None:
        """Stop competing; with ``release`` (the caller no longer writes), a held lease is
        handed back so a follower takes over at its next attempt."""
        self.state.lost()
        self._release = release
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)
        self._callbacks.shutdown(wait=False)

    # -- the elector's thread --------------------------------------------------------------
    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._campaign())
            ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        except Exception as exc:
            logger.error("leader election stopped: {}: {}", type(exc).__name__, exc)
        finally:
            ready.set()
            self.state.lost()
            loop.close()

    async def _campaign(self) -> None:
        from reconciler import lease

        o = self.options
        api = lease.open_api_client(o.api_url, o.token_file)
        lock = lease.TimedLeaseLock(o.name, o.namespace, o.identity, api, o.request_timeout)
        try:
            while True:
                election = lease.GuardedElection(self._config(lock), self._attempt_hook(lock))
                await election.run()
                # The term ended (or never began): compete again after a retry period.
                await asyncio.sleep(o.retry_period)
        finally:
            await self._finish(lock, api)

    def _config(self, lock: Any) -> Any:
        from reconciler import lease

        o = self.options
        return lease.election_config(
            lock, o.lease_duration, o.renew_deadline, o.retry_period, self._started, self._stopped
        )

    def _attempt_hook(self, lock: Any) -> Callable[[float, bool, str | None], None]:
        deadline = self.options.renew_deadline

        def hook(started: float, ok: bool, holder: str | None) -> None:
            answered = lock.last_answer is not None and lock.last_answer >= started
            self.state.attempt(started, ok, holder, answered)
            if self.state.newly_expired():
                logger.warning("lease not renewed for {:g} s: not writing any more", deadline)

        return hook

    async def _started(self) -> None:
        self._leading = True
        logger.info("leading: {} holds lease {}/{}", self.identity, *self._where())
        await self._callback(self._on_started, "started-leading")

    async def _stopped(self) -> None:
        self.state.lost()
        if not self._leading:
            return
        self._leading = False
        logger.warning("stopped leading: lease {}/{} lost; following again", *self._where())
        await self._callback(self._on_stopped, "stopped-leading")

    async def _callback(self, callback: Callable[[], None], what: str) -> None:
        """Run a controller callback off the loop, in order: one worker thread for both."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._callbacks, _safely, callback, what)

    async def _finish(self, lock: Any, api: Any) -> None:
        """Shutdown: hand the lease back when asked to, close the client."""
        self.state.lost()
        try:
            if self._release and self._leading:
                released = await asyncio.wait_for(lock.release(), self.options.request_timeout * 2)
                if released:
                    logger.info("lease {}/{} released", *self._where())
        except Exception as exc:
            logger.warning("lease not released ({}); it expires on its own", type(exc).__name__)
        finally:
            await api.close()

    def _where(self) -> tuple[str, str]:
        return self.options.namespace, self.options.name


def _nothing() -> None:
    return None


def _safely(callback: Callable[[], None], what: str) -> None:
    try:
        callback()
    except Exception as exc:
        logger.error("{} callback failed: {}: {}", what, type(exc).__name__, exc)


def lease_namespace(configured: str | None) -> str:
    """The configured namespace, else the pod's (in a cluster), else ``default``."""
    if configured:
        return configured
    try:
        return NAMESPACE_FILE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"
