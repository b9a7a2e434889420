"""The tenant name reaches every log line and every metric sample; the leader-election settings
become ``LeaseOptions`` (names, namespace, timings) or a ``ConfigError`` naming the keys."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from reconciler import leader, logs
from reconciler.config import Settings, load_settings
from reconciler.errors import ConfigError
from reconciler.metrics import Metrics
from reconciler.wiring import lease_elector, lease_options


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(logs, "_secrets", set())
    monkeypatch.setattr(logs, "_secret_re", None)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logger.remove()
    logger.configure(patcher=None, extra={})
    logger.add(sys.stderr)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_log_line_carries_the_tenant(fmt: str) -> None:
    sink = io.StringIO()
    logs.configure_logging("info", fmt, sink=sink, tenant="contoso")
    logger.info("one")
    logger.bind(step="import").warning("two")
    logging.getLogger("pycti").warning("from a library")
    lines = sink.getvalue().splitlines()
    assert len(lines) == 3
    for line in lines:
        if fmt == "json":
            assert json.loads(line)["extra"]["tenant"] == "contoso"
        else:
            assert "tenant=contoso" in line


def test_no_tenant_no_field() -> None:
    sink = io.StringIO()
    logs.configure_logging("info", "json", sink=sink)
    logger.info("one")
    assert "extra" not in json.loads(sink.getvalue())


def test_every_metric_sample_carries_the_tenant() -> None:
    metrics = Metrics(tenant="contoso")
    metrics.runs.labels("schedule", "success").inc()
    metrics.run_duration.labels("schedule").observe(0.3)
    metrics.leader.set(1)
    samples = [s for m in metrics.registry.collect() for s in m.samples]
    assert samples and all(s.labels.get("tenant") == "contoso" for s in samples)
    assert 'reconciler_leader{tenant="contoso"} 1.0' in metrics.render().decode()
    plain = Metrics()
    plain.leader.set(1)
    assert "reconciler_leader 1.0" in plain.render().decode()


def settings(**env: str) -> Settings:
    return load_settings(None, env=env, require=False)


def test_leader_election_is_off_by_default() -> None:
    assert lease_options(settings()) is None
    assert lease_elector(settings()) is None


def test_lease_options_from_settings(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    options = lease_options(
        settings(
            RECONCILER_LEADER_ELECTION="true",
            RECONCILER_TENANT="contoso",
            RECONCILER_LEASE_NAMESPACE="secops",
            RECONCILER_KUBERNETES_API_URL="http://127.0.0.1:6443",
            RECONCILER_KUBERNETES_TOKEN_FILE=str(token),
        ),
        identity="pod-1_abcd",
    )
    assert options is not None
    assert (options.name, options.namespace, options.identity) == (
        "opencti-defender-reconciler-contoso",
        "secops",
        "pod-1_abcd",
    )
    assert (options.lease_duration, options.renew_deadline, options.retry_period) == (15, 10, 2)
    assert options.request_timeout == 2 < options.renew_deadline
    assert (options.api_url, options.token_file) == ("http://127.0.0.1:6443", token)


def test_the_namespace_defaults_to_the_pods_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leader, "NAMESPACE_FILE", tmp_path / "missing")
    assert leader.lease_namespace(None) == "default"
    pod_ns = tmp_path / "namespace"
    pod_ns.write_text("secops\n")
    monkeypatch.setattr(leader, "NAMESPACE_FILE", pod_ns)
    assert leader.lease_namespace(None) == "secops"
    assert leader.lease_namespace("other") == "other"


def test_unsafe_timings_are_a_config_error() -> None:
    unsafe = settings(
        RECONCILER_LEADER_ELECTION="1",
        RECONCILER_LEASE_DURATION_SECONDS="12",
        RECONCILER_RENEW_DEADLINE_SECONDS="10",
    )
    with pytest.raises(ConfigError, match="RECONCILER_LEASE_DURATION_SECONDS"):
        lease_options(unsafe)


def test_default_identity_is_unique_per_process() -> None:
    first, second = leader.default_identity(), leader.default_identity()
    assert first != second and first.rsplit("_", 1)[0] == second.rsplit("_", 1)[0]
