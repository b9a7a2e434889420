"""Helpers for the reliability tests: settings pointing at the emulators, a Defender client
with a short timeout on a controllable clock, and request-log checks of what was written."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from reconciler.clock import Clock
from reconciler.defender.auth import BearerAuth, TokenProvider
from reconciler.defender.client import DefenderClient, RetryPolicy, Timeouts
from reconciler.sandbox.defender import DefenderEmulator, RequestRecord
from tests.e2e.support import settings_for as settings_for  # shared; re-exported here

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

Key3 = tuple[str, str, str]


def short_timeout_client(
    defender: DefenderEmulator, clock: Clock, *, timeout: float, seed: int = 0
) -> DefenderClient:
    """A client like ``wiring.defender_client`` builds, but with a short HTTP timeout
    (so the emulator's stall fault is a client timeout) and every wait on ``clock``."""
    provider = TokenProvider(
        tenant_id=defender.tenant_id,
        client_id=defender.client_id,
        client_secret=defender.client_secret,
        login_url=defender.login_url,
        ca_bundle=defender.ca_file,
        clock=clock,
        timeout=timeout,
    )
    client = DefenderClient(
        defender.url,
        BearerAuth(provider),
        clock=clock,
        verify=defender.ca_file,
        timeouts=Timeouts(connect=timeout, read=timeout),
        retry=RetryPolicy(max_attempts=10),
        seed=seed,
        token_provider=provider,  # closed with the client
    )
    return client


def row_key(row: dict[str, Any]) -> Key3:
    return (str(row["indicatorType"]), str(row["indicatorValue"]), str(row["action"]))


def written_keys(records: Iterable[RequestRecord]) -> set[Key3]:
    """(type, value, action) of every indicator any import/submit request carried."""
    keys: set[Key3] = set()
    for record in records:
        body = record.body
        if record.endpoint == "import" and isinstance(body, dict):
            items = body.get("Indicators") or []
        elif record.endpoint == "submit":
            items = [body]
        else:
            continue
        for item in items:
            if isinstance(item, dict):
                keys.add(
                    (
                        str(item.get("indicatorType")),
                        str(item.get("indicatorValue")),
                        str(item.get("action")),
                    )
                )
    return keys


def deleted_ids(records: Iterable[RequestRecord]) -> set[str]:
    """Every id a BatchDelete body or a DELETE path named."""
    ids: set[str] = set()
    for record in records:
        if record.endpoint == "batch_delete" and isinstance(record.body, dict):
            ids.update(str(i) for i in record.body.get("IndicatorIds") or [])
        elif record.endpoint == "delete":
            ids.add(record.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    return ids
