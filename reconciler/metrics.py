"""Prometheus metrics of the controller, on a registry of its own (tests get a fresh one).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` durations); label sets
are small and closed (trigger, result, action, endpoint, status, event type). No label or value
ever holds an indicator value, an id or a secret. With a tenant name (``reconciler.tenant``)
every sample also carries ``tenant="<name>"``, added when the registry is collected, so a
metric added later carries it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from reconciler.defender.lifecycle import LifecycleNotice

__all__ = ["Metrics"]

_PREFIX = "reconciler"


class TenantRegistry(CollectorRegistry):  # type: ignore[misc]
    """A registry whose every sample carries ``tenant="<name>"``."""

    def __init__(self, tenant: str) -> None:
        super().__init__()
        self.tenant = tenant

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [
                s._replace(labels={**s.labels, "tenant": self.tenant}) for s in metric.samples
            ]
            yield labelled


class Metrics:
    """All metrics of one controller process; ``tenant`` labels every sample."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, tenant: str | None = None
    ) -> None:
        self.tenant = tenant
        self.registry = registry or (TenantRegistry(tenant) if tenant else CollectorRegistry())
        self._reconcile_metrics(self.registry)
        self._defender_metrics(self.registry)
        self._process_metrics(self.registry)

    def _reconcile_metrics(self, r: CollectorRegistry) -> None:
        """Runs, what they planned and applied, quota."""
        p = _PREFIX
        self.runs = Counter(
            f"{p}_reconcile_runs",
            "Reconcile runs by trigger and result.",
            ["trigger", "result"],
            registry=r,
        )
        self.run_duration = Histogram(
            f"{p}_reconcile_duration_seconds",
            "Duration of reconcile runs by trigger.",
            ["trigger"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.planned = Counter(
            f"{p}_planned_changes", "Changes planned, by action.", ["action"], registry=r
        )
        self.applied = Counter(
            f"{p}_applied_changes", "Changes applied, by action.", ["action"], registry=r
        )
        self.failed_items = Counter(
            f"{p}_failed_items", "Changes that failed to apply, by step.", ["step"], registry=r
        )
        self.drift = Counter(
            f"{p}_drift_found",
            "Differences found by scheduled full reconciles (drift), by action.",
            ["action"],
            registry=r,
        )
        self.skipped = Counter(
            f"{p}_skipped_indicators",
            "OpenCTI indicators or values not deployed, by reason (per full run).",
            ["reason"],
            registry=r,
        )
        self.blocked_deletes = Counter(
            f"{p}_guard_blocked_deletes", "Deletes held back by a safety guard.", registry=r
        )
        self.owned = Gauge(
            f"{p}_owned_indicators", "Defender indicators owned by this reconciler.", registry=r
        )
        self.quota_used = Gauge(
            f"{p}_quota_used", "Active Defender indicators (all owners).", registry=r
        )
        self.quota_free = Gauge(
            f"{p}_quota_free", "Room left under the active-indicator quota.", registry=r
        )
        self.unconverged = Gauge(
            f"{p}_unconverged_keys",
            "Keys the last full reconcile held back: the same change was planned in several "
            "consecutive full runs and Defender did not keep it.",
            registry=r,
        )

    def _defender_metrics(self, r: CollectorRegistry) -> None:
        """The Defender API: calls, throttling, retries, its announced end of life."""
        p = _PREFIX
        self.api_calls = Counter(
            f"{p}_defender_api_calls",
            "Defender API calls by endpoint and HTTP status (error = no response).",
            ["endpoint", "status"],
            registry=r,
        )
        self.throttled = Counter(
            f"{p}_defender_throttled",
            "Defender 429 responses, by endpoint.",
            ["endpoint"],
            registry=r,
        )
        self.retries = Counter(
            f"{p}_defender_retries",
            "Defender calls answered 429, 5xx or not at all (retried), by endpoint.",
            ["endpoint"],
            registry=r,
        )
        self.api_deprecated = Gauge(
            f"{p}_defender_api_deprecated",
            "1 when a Defender endpoint answered with a Deprecation or Sunset header, 2 when it "
            "answered 410 Gone (retired).",
            ["endpoint"],
            registry=r,
        )
        self.api_sunset = Gauge(
            f"{p}_defender_api_sunset_timestamp_seconds",
            "Unix time of the Sunset date a Defender endpoint announced.",
            ["endpoint"],
            registry=r,
        )

    def _process_metrics(self, r: CollectorRegistry) -> None:
        """The live stream, the last success, leadership, dry-run mode."""
        p = _PREFIX
        self.stream_events = Counter(
            f"{p}_stream_events", "Live-stream events received, by type.", ["type"], registry=r
        )
        self.stream_connected = Gauge(
            f"{p}_stream_connected", "1 while the live stream is connected.", registry=r
        )
        self.stream_lag = Gauge(
            f"{p}_stream_lag_seconds",
            "Age of the newest stream position when it was processed.",
            registry=r,
        )
        self.last_success = Gauge(
            f"{p}_last_success_timestamp_seconds",
            "Unix time of the last successful full reconcile.",
            registry=r,
        )
        self.leader = Gauge(
            f"{p}_leader",
            "1 while this replica is the leader (the one that writes; always 1 without leader "
            "election), 0 while it follows.",
            registry=r,
        )
        self.dry_run = Gauge(
            f"{p}_dry_run", "1 when the controller runs in dry-run mode.", registry=r
        )
        self.write_back_edits = Counter(
            f"{p}_write_back_edits",
            "External-reference edits sent to OpenCTI by the write-back (attach, patch, detach).",
            registry=r,
        )
        self.write_back_calls = Counter(
            f"{p}_write_back_calls", "OpenCTI calls made by the write-back.", registry=r
        )
        self.write_back_failures = Counter(
            f"{p}_write_back_failures",
            "OpenCTI indicators whose write-back failed (retried on the next run).",
            registry=r,
        )
        self.hits_read = Counter(
            f"{p}_hits_read",
            "Defender alerts read that are hits of our indicators, per (alert, indicator).",
            registry=r,
        )
        self.sightings_written = Counter(
            f"{p}_sightings_written", "OpenCTI sightings created or updated.", registry=r
        )
        self.sightings_errors = Counter(
            f"{p}_sightings_errors",
            "Sightings passes that failed, and indicators whose sighting was not written.",
            registry=r,
        )

    def on_defender_call(self, endpoint: str, status: int | None) -> None:
        """Hook for the Defender client: one call finished (``status`` None = no response)."""
        self.api_calls.labels(endpoint, str(status) if status is not None else "error").inc()
        if status == 429:
            self.throttled.labels(endpoint).inc()
        if status is None or status == 429 or status >= 500:
            # The client retries these (until its attempts run out).
            self.retries.labels(endpoint).inc()

    def on_lifecycle(self, notice: LifecycleNotice) -> None:
        """Hook for the Defender client: an endpoint announced its end of life."""
        self.api_deprecated.labels(notice.endpoint).set(2 if notice.gone else 1)
        if notice.sunset is not None:
            self.api_sunset.labels(notice.endpoint).set(notice.sunset.timestamp())

    def render(self) -> bytes:
        """The exposition text for ``/metrics``."""
        return generate_latest(self.registry)
