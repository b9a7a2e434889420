"""``reconciler run``: the long-running controller.

Wires two triggers into the same map → plan → apply path, under one lock:

- a scheduled **full reconcile** (APScheduler interval job, jitter, ``max_instances=1``,
  coalescing, one run at start-up; a failed run is retried with capped backoff and never
  kills the process) — correctness: it heals whatever the stream missed;
- the **live stream** (micro-batched events) → a **scoped reconcile** of the keys the events
  touch — latency.

Also serves ``/healthz``, ``/readyz`` and ``/metrics`` on ``reconciler.http_port`` and shuts
down gracefully on SIGTERM/SIGINT (stops taking events, abandons the in-flight batch between
two write calls, exits 0 within 20 s). In dry-run mode everything runs but nothing is written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from loguru import logger

from reconciler.clock import Clock, SystemClock
from reconciler.engine import ActualState, Engine
from reconciler.errors import ReconcilerError
from reconciler.gcpause import paused_gc
from reconciler.mapping import OpenCTIIndicator, indicator_from_graphql, indicator_from_stix
from reconciler.metrics import Metrics
from reconciler.model import IndicatorKey, Skipped
from reconciler.plan import Plan, build_plan
from reconciler.scope import DesiredIndex

__all__ = ["Controller", "ShutdownRequestedError", "StoppableClock", "run_controller"]

RETRY_BASE = 5.0
SHUTDOWN_GRACE = 15.0


class ShutdownRequestedError(ReconcilerError):
    """Raised inside a run when the process is stopping: the rest of the run is abandoned
    between two write calls (safe: every write is idempotent and the next run converges)."""


class StoppableClock(SystemClock):
    """The real clock, whose sleeps end at once (raising) when shutdown is requested."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def sleep(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)):
            raise ShutdownRequestedError("shutdown requested while waiting")


class Controller:
    """Scheduler + stream + lock + metrics + health, around one ``Engine``."""

    def __init__(
        self,
        settings: Any,
        *,
        engine: Engine,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.clock: Clock = clock or SystemClock()
        self.stop_event = stop or threading.Event()
        self.lock = threading.Lock()
        self.index = DesiredIndex(engine.mapping_policy)
        self.interval = float(settings.reconciler.interval_seconds)
        self.dry_run = bool(settings.reconciler.dry_run)
        self.metrics.dry_run.set(1 if self.dry_run else 0)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.consumer: Any = None
        self.http: ThreadingHTTPServer | None = None
        self.last_full_ok: float | None = None  # monotonic time of the last success
        self.last_full_failed = False
        self.failures_in_row = 0
        # Running totals from the last full listing, kept up to date by scoped runs: they give a
        # scoped plan its quota headroom and the owned/quota gauges their values.
        self._owned_total = 0
        self._non_owned = 0
        self.started_at = time.monotonic()

    # -- full reconcile --------------------------------------------------------------------
    def full_reconcile(self, trigger: str = "schedule") -> bool:
        """One full pass; never raises. Returns True on success."""
        with self.lock:
            if self.stop_event.is_set():
                return False
            start = time.monotonic()
            try:
                with paused_gc():  # reading and planning only; see reconciler.gcpause
                    parsed: list[OpenCTIIndicator | Skipped] = self.engine.source.read_indicators(
                        indicator_from_graphql
                    )
                    desired = self.index.replace_all(parsed, now=self.clock.now())
                    del parsed
                    actual = self.engine.read_actual()
                    self._non_owned = actual.non_owned_count
                    plan = self.engine.plan(desired=desired, actual=actual)
                self._observe_plan(plan, drift=trigger == "schedule", skipped=desired.skipped)
                self._apply(plan, owned_before=len(actual.owned), owned_outside=0)
            except ShutdownRequestedError:
                logger.warning("full reconcile abandoned: shutting down")
                self.metrics.runs.labels(trigger, "abandoned").inc()
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
    def handle_events(self, events: Sequence[Any]) -> None:
        """Stream callback: scoped reconcile of the keys a batch of events touches.

        Never raises (an error is logged and counted; the next full reconcile heals)."""
        try:
            self._handle_events(events)
        except ShutdownRequestedError:
            logger.warning("scoped reconcile abandoned: shutting down")
        except Exception as exc:
            self.metrics.runs.labels("stream", "error").inc()
            logger.error("scoped reconcile failed ({}): {}", type(exc).__name__, exc)

    def _handle_events(self, events: Sequence[Any]) -> None:
        with self.lock:
            if self.stop_event.is_set():
                raise ShutdownRequestedError("shutting down")
            start = time.monotonic()
            now = self.clock.now()
            affected: set[IndicatorKey] = set()
            for ev in events:
                kind = str(getattr(ev, "event", "unknown"))
                self.metrics.stream_events.labels(kind).inc()
                if not getattr(ev, "is_indicator", False):
                    continue
                opencti_id = getattr(ev, "opencti_id", None)
                if kind == "delete":
                    if opencti_id:
                        affected |= self.index.remove(opencti_id)
                    continue
                parsed = indicator_from_stix(ev.data)
                if isinstance(parsed, Skipped):
                    logger.warning(
                        "stream event {} skipped: {} {}", ev.id, parsed.reason, parsed.detail
                    )
                    if opencti_id:
                        affected |= self.index.remove(opencti_id)
                    continue
                affected |= self.index.upsert(parsed, now=now)
            if not affected:
                return
            if not self.index.loaded:
                # Without a first full listing we do not know the other contributors of a key;
                # the start-up full reconcile (running or due) covers these events.
                logger.info("stream events before the first full reconcile; left to it")
                return
            desired = self.index.state_for(affected)
            actual = self.engine.read_actual_for(affected)
            outside = max(0, self._owned_total - len(actual.owned))
            plan = self._scoped_plan(desired, actual, outside)
            self._observe_plan(plan, drift=False, skipped=())
            self._apply(plan, owned_before=len(actual.owned), owned_outside=outside)
            self.metrics.runs.labels("stream", "success").inc()
            self.metrics.run_duration.labels("stream").observe(time.monotonic() - start)

    def _scoped_plan(self, desired: Any, actual: ActualState, owned_outside: int) -> Plan:
        # The rest of the tenant (other tools' indicators and our own outside the scope) takes
        # quota room the scoped keys cannot use.
        return build_plan(
            desired.desired,
            actual.owned,
            skipped=desired.skipped,
            expired_keys=desired.expired_keys,
            non_owned_count=self._non_owned + owned_outside,
            held_by_others=actual.held_by_others,
            policy=self.engine.plan_policy,
            complete=True,
            scoped=True,
        )

    # -- shared --------------------------------------------------------------------------
    def _observe_plan(self, plan: Plan, *, drift: bool, skipped: Iterable[Skipped]) -> None:
        for action, n in plan.summary.items():
            if action in ("unchanged",) or not n:
                continue
            self.metrics.planned.labels(action).inc(n)
            if drift and action != "skip":
                self.metrics.drift.labels(action).inc(n)
        for skip in skipped:
            self.metrics.skipped.labels(skip.reason.value).inc()
        if plan.guards and plan.deletes_blocked:
            for g in plan.guards:
                if g.blocked:
                    logger.warning("guard {}: {}", g.name, g.message)
        if self.dry_run and not plan.is_empty:
            logger.info("dry-run plan: {}", plan.summary)

    def _apply(self, plan: Plan, *, owned_before: int, owned_outside: int) -> None:
        if plan.is_empty:
            self._set_owned(owned_outside + owned_before)
            return
        stop = self.stop_event

        def on_batch(step: str, n: int) -> None:
            if stop.is_set():
                raise ShutdownRequestedError("shutdown requested between write calls")

        result = self.engine.apply(plan, dry_run=self.dry_run, on_batch=on_batch)
        if result.blocked_deletes:
            self.metrics.blocked_deletes.inc(result.blocked_deletes)
        if not self.dry_run:
            for action, n in result.applied.items():
                self.metrics.applied.labels(action).inc(n)
        for failure in result.failures:
            self.metrics.failed_items.labels(failure.step).inc()
        if self.dry_run:
            self._set_owned(owned_outside + owned_before)
        else:
            # What the plan intended, less what failed: re-read by the next full run anyway.
            self._set_owned(owned_outside + plan.quota.planned_owned_after)
        if result.aborted:
            raise ReconcilerError(f"apply aborted: {result.aborted}")

    def _set_owned(self, owned: int) -> None:
        self._owned_total = owned
        self.metrics.owned.set(owned)
        used = owned + self._non_owned
        limit = self.engine.plan_policy.quota
        self.metrics.quota_used.set(used)
        self.metrics.quota_free.set(max(0, limit - used))

    # -- health ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        alive = self.scheduler.running and not self.stop_event.is_set()
        return alive, "ok" if alive else "scheduler not running"

    def readiness(self) -> tuple[bool, str]:
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
        controller = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = controller.metrics.render()
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif path in ("/healthz", "/readyz"):
                    ok, text = controller.health() if path == "/healthz" else controller.readiness()
                    self._send(200 if ok else 503, (text + "\n").encode(), "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        bind = port if port is not None else int(self.settings.reconciler.http_port)
        server = ThreadingHTTPServer((host, bind), Handler)
        server.daemon_threads = True
        self.http = server
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
        actual_port = int(server.server_address[1])
        logger.info(
            "health and metrics on http://{}:{}/ (healthz, readyz, metrics)", host, actual_port
        )
        return actual_port

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
        self.scheduler.start()
        if with_stream and self.consumer is not None:
            self.consumer.start()

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
        if self.lock.acquire(timeout=remaining):
            self.lock.release()
        else:
            logger.warning("in-flight reconcile still running at shutdown; abandoning it")
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()


def run_controller(settings: Any) -> int:
    """Build and run the controller until SIGTERM/SIGINT; returns the exit code (0)."""
    from reconciler.logs import add_secret
    from reconciler.opencti.state import FileStore, OpenCTIConnectorStore
    from reconciler.opencti.stream import StreamConsumer
    from reconciler.wiring import open_engine

    stop = threading.Event()
    clock = StoppableClock(stop)
    metrics = Metrics()

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("received {}; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    with open_engine(
        settings, clock=clock, on_token=add_secret, on_call=metrics.on_defender_call
    ) as engine:
        controller = Controller(settings, engine=engine, metrics=metrics, clock=clock, stop=stop)
        octi = settings.opencti
        conn = settings.connector
        token = octi.token.get_secret_value()
        state_path = settings.reconciler.state_path
        store: Any = (
            FileStore(state_path)
            if state_path
            else OpenCTIConnectorStore(
                octi.url, token, conn.id, connector_name=conn.name, ssl_verify=octi.ssl_verify
            )
        )
        controller.consumer = StreamConsumer(
            octi.url,
            token,
            conn.live_stream_id,
            on_events=controller.handle_events,
            state=store,
            listen_delete=conn.live_stream_listen_delete,
            no_dependencies=conn.live_stream_no_dependencies,
            ssl_verify=octi.ssl_verify,
            on_status=_stream_status(metrics),
        )
        controller.start_http()
        controller.start()
        logger.info(
            "controller running: full reconcile every {} s, stream {}{}",
            int(controller.interval),
            conn.live_stream_id,
            " (dry-run: nothing is written)" if controller.dry_run else "",
        )
        stop.wait()
        controller.shutdown()
    logger.info("stopped")
    return 0


def _stream_status(metrics: Metrics) -> Any:
    def on_status(kind: str, info: dict[str, Any]) -> None:
        if kind == "connected":
            metrics.stream_connected.set(1)
        elif kind == "disconnected":
            metrics.stream_connected.set(0)
        lag = info.get("lag") if isinstance(info, dict) else None
        if isinstance(lag, int | float):
            metrics.stream_lag.set(lag)

    return on_status
