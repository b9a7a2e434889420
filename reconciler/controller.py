"""``reconciler run``'s controller: when to reconcile, one at a time, and what to count.

Wires two triggers into the ``Engine``, under one lock:

- a scheduled **full reconcile** (APScheduler interval job, jitter, ``max_instances=1``,
  coalescing, one run at start-up; a failed run is retried with capped backoff and never
  kills the process) — correctness: it heals whatever the stream missed;
- the **live stream** (micro-batched events) → ``Engine.reconcile_ids`` for the OpenCTI ids
  the events name — latency. An event is only a hint: the engine re-reads those ids through
  the stream's filters.

It owns scheduling, the lock, the stream consumer's lifecycle, readiness and metrics; it does
no reading, mapping or planning itself (``engine``), serves HTTP through ``health`` and is
built by ``service`` from ``wiring``. Shutdown: stops taking events, abandons the in-flight
run between two write calls, leaves within ``SHUTDOWN_GRACE`` seconds. In dry-run mode
everything runs but nothing is written.

With a ``Leadership`` (leader election, ``leader.LeaseElector``), only the leader works: the
scheduled runs of a follower do nothing, the stream is followed only while leading (a consumer
is made from ``consumer_factory`` per term), a new leader runs a full reconcile at once
(trigger ``takeover``), and the write guard ``is_leader()`` is checked before a run starts,
before every write call and between write calls: a leader whose lease was not renewed in time
abandons its run before anyone else can take the lease over. Readiness of a follower is the
elector's (the Lease API answers); of the leader, the full-reconcile rule below. Without a
``Leadership`` nothing of this applies and the process is its own (only) writer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from loguru import logger

from reconciler.clock import SystemClock
from reconciler.engine import Engine, Outcome
from reconciler.errors import ReconcilerError, UnusableFilterError
from reconciler.gcpause import release_memory
from reconciler.health import HealthServer
from reconciler.metrics import Metrics
from reconciler.sightings import SightingsJob, SightingsReport

__all__ = [
    "Controller",
    "ControllerOptions",
    "EventHint",
    "Leadership",
    "LeadershipLostError",
    "ShutdownRequestedError",
    "StoppableClock",
]

RETRY_BASE = 5.0
SHUTDOWN_GRACE = 15.0


class ShutdownRequestedError(ReconcilerError):
    """Raised inside a run when the process is stopping: the rest of the run is abandoned
    between two write calls (safe: every write is idempotent and the next run converges)."""


class LeadershipLostError(ShutdownRequestedError):
    """Raised inside a run when this replica may no longer write (its lease was not renewed
    within the renew deadline): the rest of the run is abandoned before the next write call."""


class StoppableClock(SystemClock):
    """The real clock, whose sleeps end at once (raising) when shutdown is requested."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def sleep(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)):
            raise ShutdownRequestedError("shutdown requested while waiting")


@dataclass(frozen=True)
class ControllerOptions:
    """The controller's settings (built by ``wiring.controller_options``)."""

    interval_seconds: float
    http_port: int
    stream_id: str


class EventHint(Protocol):
    """What the controller reads of a stream event (``opencti.stream.StreamEvent``)."""

    @property
    def event(self) -> str: ...

    @property
    def is_indicator(self) -> bool: ...

    @property
    def references_only(self) -> bool: ...

    @property
    def opencti_ids(self) -> tuple[str, ...]: ...


class Consumer(Protocol):
    """The stream consumer's lifecycle (``opencti.stream.StreamConsumer``)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


class Leadership(Protocol):
    """Leader election as the controller uses it (``leader.LeaseElector``; a fake in tests)."""

    @property
    def identity(self) -> str: ...

    def is_leader(self) -> bool:
        """The write guard: True only while this replica may write."""
        ...

    def alive(self) -> bool:
        """False once the election stopped working (the process is then unhealthy)."""
        ...

    def follower_status(self) -> tuple[bool, str]:
        """Readiness while following: (ready, one-line reason)."""
        ...

    def start(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        """Compete; call back (one at a time) when this replica starts or stops leading."""
        ...

    def stop(self, *, release: bool, timeout: float = 5.0) -> None:
        """Stop competing; ``release``: hand a held lease back (nothing is being written)."""
        ...


class Controller:
    """Scheduler + stream + lock + readiness + metrics, around one ``Engine``."""

    def __init__(
        self,
        options: ControllerOptions,
        *,
        engine: Engine,
        metrics: Metrics | None = None,
        stop: threading.Event | None = None,
        leadership: Leadership | None = None,
        sightings: SightingsJob | None = None,
        sightings_interval: float = 300.0,
    ) -> None:
        self.options = options
        self.engine = engine
        #: Defender alerts → OpenCTI sightings, every ``sightings_interval`` seconds.
        self.sightings = sightings
        self.sightings_interval = sightings_interval
        self.metrics = metrics or Metrics()
        self.stop_event = stop or threading.Event()
        self.lock = threading.Lock()
        self.interval = options.interval_seconds
        self.dry_run = engine.dry_run
        self.metrics.dry_run.set(1 if self.dry_run else 0)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.consumer: Consumer | None = None
        #: With leader election: makes the stream consumer of each term (a stopped one cannot
        #: be started again).
        self.consumer_factory: Callable[[], Consumer] | None = None
        self._with_stream = True
        self.leadership = leadership
        self._term_lock = threading.Lock()  # started/stopped leading, one at a time
        self.metrics.leader.set(1 if leadership is None else 0)
        self.http = HealthServer(health=self.health, readiness=self.readiness, metrics=self.metrics)
        self.last_full_ok: float | None = None  # monotonic time of the last success
        self.last_full_failed = False
        self.failures_in_row = 0
        #: Set when the controller stopped itself (an unusable stream filter): the process
        #: exits with this error.
        self.fatal: ReconcilerError | None = None

    # -- full reconcile --------------------------------------------------------------------
    def full_reconcile(self, trigger: str = "schedule") -> bool:
        """One full pass; never raises. Returns True on success."""
        with self.lock:
            if self.stop_event.is_set() or not self._may_write():
                return False
            start = time.monotonic()
            try:
                outcome = self.engine.reconcile_full(
                    on_batch=self._between_writes, before_write=self._before_write
                )
                self._observe(outcome, drift=trigger == "schedule")
            except ShutdownRequestedError as exc:
                logger.warning("full reconcile abandoned: {}", exc)
                self.metrics.runs.labels(trigger, "abandoned").inc()
                return False
            except UnusableFilterError as exc:
                self._fail_closed(exc, trigger)
                return False
            except Exception as exc:
                self.last_full_failed = True
                self.failures_in_row += 1
                self.metrics.runs.labels(trigger, "error").inc()
                self.metrics.run_duration.labels(trigger).observe(time.monotonic() - start)
                logger.error("full reconcile failed ({}): {}", type(exc).__name__, exc)
                self._schedule_retry()
                return False
            self.last_full_failed = False
            self.failures_in_row = 0
            self.last_full_ok = time.monotonic()
            self.metrics.last_success.set(time.time())
            self.metrics.runs.labels(trigger, "success").inc()
            self.metrics.run_duration.labels(trigger).observe(time.monotonic() - start)
            release_memory()  # a long-lived process: the next pass starts from a compact heap
            return True

    def _schedule_retry(self) -> None:
        delay = min(RETRY_BASE * 2 ** (self.failures_in_row - 1), max(self.interval, RETRY_BASE))
        if not self.scheduler.running or self.stop_event.is_set():
            return
        run_at = datetime.now(UTC) + timedelta(seconds=delay)
        logger.info("next full reconcile attempt in {:.0f} s", delay)
        self.scheduler.add_job(
            self.full_reconcile,
            "date",
            run_date=run_at,
            args=["retry"],
            id="full-retry",
            replace_existing=True,
            misfire_grace_time=None,
        )

    # -- scoped reconcile (stream) ---------------------------------------------------------
    def handle_events(self, events: Sequence[EventHint]) -> None:
        """Stream callback: a scoped reconcile of the OpenCTI ids a batch of events names.

        Never raises (an error is logged and counted; the next full reconcile heals)."""
        try:
            self._handle_events(events)
        except ShutdownRequestedError as exc:
            logger.warning("scoped reconcile abandoned: {}", exc)
        except UnusableFilterError as exc:
            self._fail_closed(exc, "stream")
        except Exception as exc:
            self.metrics.runs.labels("stream", "error").inc()
            logger.error("scoped reconcile failed ({}): {}", type(exc).__name__, exc)

    def _handle_events(self, events: Sequence[EventHint]) -> None:
        ids: set[str] = set()
        refs: set[str] = set()
        for ev in events:
            self.metrics.stream_events.labels(ev.event).inc()
            if ev.is_indicator:
                # An edit of external references alone (the write-back's own, or an analyst's)
                # changes nothing deployed: the write-back only reads those again next run.
                (refs if ev.references_only else ids).update(ev.opencti_ids)
        write_back = self.engine.write_back
        if refs - ids and write_back is not None:
            with self.lock:
                write_back.forget(refs - ids)
        if not ids:
            return
        with self.lock:
            if self.stop_event.is_set():
                raise ShutdownRequestedError("shutting down")
            if not self._may_write():
                return  # the new leader's takeover run covers these ids
            start = time.monotonic()
            outcome = self.engine.reconcile_ids(
                ids, on_batch=self._between_writes, before_write=self._before_write
            )
            if outcome is None:
                return
            self._observe(outcome, drift=False)
            self.metrics.runs.labels("stream", "success").inc()
            self.metrics.run_duration.labels("stream").observe(time.monotonic() - start)

    def _fail_closed(self, exc: UnusableFilterError, trigger: str) -> None:
        """The stream's filters cannot be applied exactly: nothing can be planned safely, so
        the process stops (``fatal``; exit code 1) instead of retrying what cannot work."""
        self.metrics.runs.labels(trigger, "error").inc()
        self.last_full_failed = True
        self.fatal = exc
        logger.error("stopping: {}", exc)
        self.stop_event.set()

    # -- shared --------------------------------------------------------------------------
    def _between_writes(self, step: str, n: int) -> None:
        if self.stop_event.is_set():
            raise ShutdownRequestedError("shutdown requested between write calls")
        self._before_write(step)

    def _before_write(self, step: str) -> None:
        if self.leadership is not None and not self.leadership.is_leader():
            raise LeadershipLostError(f"not the leader any more: no further {step} call")

    def _may_write(self) -> bool:
        return self.leadership is None or self.leadership.is_leader()

    def _observe(self, outcome: Outcome, *, drift: bool) -> None:
        """Count what a run planned and applied; raise when apply was aborted."""
        plan, result = outcome.plan, outcome.result
        for kind, n in plan.summary.items():
            if kind == "unchanged" or not n:
                continue
            self.metrics.planned.labels(kind).inc(n)
            if drift and kind != "skip":
                self.metrics.drift.labels(kind).inc(n)
        for skip in outcome.skipped:
            self.metrics.skipped.labels(skip.reason.value).inc()
        for g in plan.guards:
            if g.blocked:
                logger.warning("guard {}: {}", g.name, g.message)
        if self.dry_run and not plan.is_empty:
            logger.info("dry-run plan: {}", plan.summary)
        self._set_owned()
        self._observe_write_back(outcome)
        if result is None:
            return
        if result.blocked_deletes:
            self.metrics.blocked_deletes.inc(result.blocked_deletes)
        if not self.dry_run:
            for kind, n in result.applied.items():
                self.metrics.applied.labels(kind).inc(n)
        for failure in result.failures:
            self.metrics.failed_items.labels(failure.step).inc()
        if result.aborted:
            raise ReconcilerError(f"apply aborted: {result.aborted}")

    def _observe_write_back(self, outcome: Outcome) -> None:
        report = outcome.write_back
        if report is None:
            return
        self.metrics.write_back_edits.inc(report.edits)
        self.metrics.write_back_calls.inc(report.calls)
        self.metrics.write_back_failures.inc(report.failed)

    # -- sightings -------------------------------------------------------------------------
    def run_sightings(self) -> SightingsReport | None:
        """One sightings pass (the leader's alone); never raises."""
        job = self.sightings
        if job is None or self.stop_event.is_set() or not self._may_write():
            return None
        try:
            report = job.run()
        except Exception as exc:  # a bug must not stop the scheduler's job
            self.metrics.sightings_errors.inc()
            logger.error("sightings pass failed ({}): {}", type(exc).__name__, exc)
            return None
        self.metrics.hits_read.inc(report.hits)
        self.metrics.sightings_written.inc(report.sightings)
        self.metrics.sightings_errors.inc(report.failed + (1 if report.error else 0))
        return report

    def _set_owned(self) -> None:
        self.metrics.unconverged.set(self.engine.churn.held)
        owned = self.engine.owned_total
        used = owned + self.engine.non_owned
        self.metrics.owned.set(owned)
        self.metrics.quota_used.set(used)
        self.metrics.quota_free.set(max(0, self.engine.plan_policy.quota - used))

    # -- health ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        alive = self.scheduler.running and not self.stop_event.is_set()
        if alive and self.leadership is not None and not self.leadership.alive():
            return False, "leader election stopped"
        return alive, "ok" if alive else "scheduler not running"

    def readiness(self) -> tuple[bool, str]:
        if self.leadership is not None and not self.leadership.is_leader():
            return self.leadership.follower_status()
        if self.last_full_ok is None:
            return False, "no successful full reconcile yet"
        if self.last_full_failed:
            return False, "the last full reconcile failed"
        age = time.monotonic() - self.last_full_ok
        if age > 3 * self.interval:
            return False, f"last successful full reconcile {age:.0f} s ago (> 3 intervals)"
        return True, "ok"

    def start_http(self, host: str = "0.0.0.0", port: int | None = None) -> int:
        """Serve /healthz, /readyz, /metrics in a daemon thread; returns the bound port."""
        return self.http.start(host, self.options.http_port if port is None else port)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, with_stream: bool = True) -> None:
        interval = self.interval
        jitter = min(interval * 0.1, 30.0)
        self.scheduler.add_job(
            self.full_reconcile,
            IntervalTrigger(seconds=interval, jitter=jitter, timezone=UTC),
            args=["schedule"],
            id="full",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC) + timedelta(seconds=interval),
            misfire_grace_time=None,
        )
        self.scheduler.add_job(
            self.full_reconcile, "date", args=["startup"], id="startup", misfire_grace_time=None
        )
        if self.sightings is not None:
            self.scheduler.add_job(
                self.run_sightings,
                IntervalTrigger(seconds=self.sightings_interval, timezone=UTC),
                id="sightings",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        self.scheduler.start()
        self._with_stream = with_stream
        if self.leadership is not None:
            self.leadership.start(self._started_leading, self._stopped_leading)
        elif with_stream and self.consumer is not None:
            self.consumer.start()

    def _started_leading(self) -> None:
        """A new term: reconcile everything now (the stream was not followed meanwhile), then
        follow the stream. Readiness starts over: ready after this term's first full run."""
        with self._term_lock:
            if self.stop_event.is_set() or not self._may_write():
                return
            self.metrics.leader.set(1)
            self.last_full_ok, self.last_full_failed, self.failures_in_row = None, False, 0
            logger.info("leading: a full reconcile now, then the live stream")
            if self.scheduler.running:
                self.scheduler.add_job(
                    self.full_reconcile,
                    "date",
                    args=["takeover"],
                    id="takeover",
                    replace_existing=True,
                    misfire_grace_time=None,
                )
            if self._with_stream and self.consumer_factory is not None:
                self.consumer = self.consumer_factory()
                self.consumer.start()

    def _stopped_leading(self) -> None:
        """The term ended: the write guard already stops writes; stop following the stream
        (in the background: a handler may be finishing) and drop the pending retry."""
        with self._term_lock:
            self.metrics.leader.set(0)
            consumer, self.consumer = self.consumer, None
            for job in ("full-retry", "takeover"):
                with contextlib.suppress(Exception):
                    self.scheduler.remove_job(job)
        if consumer is not None:
            threading.Thread(
                target=_stop_quietly, args=(consumer,), name="stream-stop", daemon=True
            ).start()

    def shutdown(self) -> None:
        """Stop taking events, let the in-flight run reach a safe point, stop serving."""
        self.stop_event.set()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        if self.consumer is not None:
            try:
                self.consumer.stop(timeout=min(10.0, SHUTDOWN_GRACE))
            except Exception as exc:
                logger.warning("stream consumer did not stop cleanly: {}", exc)
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        remaining = max(0.1, deadline - time.monotonic())
        idle = self.lock.acquire(timeout=remaining)
        if idle:
            self.lock.release()
        else:
            logger.warning("in-flight reconcile still running at shutdown; abandoning it")
        if self.leadership is not None:
            # Hand the lease back only when no write can still be under way.
            self.leadership.stop(release=idle)
        self.http.stop()


def _stop_quietly(consumer: Consumer) -> None:
    try:
        consumer.stop(timeout=10.0)
    except Exception as exc:
        logger.warning("stream consumer did not stop cleanly: {}", exc)
